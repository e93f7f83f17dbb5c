"""Classifiers chosen by name: a small CPU CNN and MONAI DenseNet/ResNet, 2D and 3D."""

from .cnn import SmallCNN
from .registry import MODELS, build_model

__all__ = ["MODELS", "SmallCNN", "build_model"]
