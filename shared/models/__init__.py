"""Classifiers chosen by name: a small CPU CNN, the DLG LeNet, and MONAI DenseNet/ResNet, 2D and 3D."""

from .cnn import SmallCNN
from .lenet import LeNet
from .registry import MODELS, build_model

__all__ = ["MODELS", "LeNet", "SmallCNN", "build_model"]
