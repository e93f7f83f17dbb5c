"""LeNet of the gradient-leakage literature (DLG), a registered classifier for 2D inputs."""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """The LeNet of the DLG paper (sigmoid, strided 5x5 convs), sized for 28x28 or 32x32.

    Smooth activations and no pooling make its gradients nearly invertible: it is the
    reference model of the gradient-leakage literature, so audits on it are comparable.
    ``act='sigmoid'`` is the paper's; it barely trains on PneumoniaMNIST, ``'tanh'``
    trains (about 0.8 test accuracy in 3 epochs) and leaks just as much.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 2, image_size: int = 28, width: int = 12, act: str = "sigmoid"
    ) -> None:
        super().__init__()
        acts = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
        if act not in acts:
            raise ValueError(f"act: unknown activation {act!r}; choose one of {sorted(acts)}")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2), acts[act](),
            nn.Conv2d(width, width, 5, stride=2, padding=2), acts[act](),
            nn.Conv2d(width, width, 5, stride=1, padding=2), acts[act](),
            nn.Flatten(),
        )
        side = (image_size + 3) // 4
        self.head = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
