"""A small convolutional classifier for CPU-sized federated runs (2D or 3D)."""

from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """BatchNorm for plain training; GroupNorm where per-sample gradients (Opacus) are needed."""
    if kind == "batch":
        return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: unknown normalisation {kind!r} (use 'batch', 'group' or 'none')")


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: about 0.1 M parameters, trains in seconds on 28x28.

    ``features`` returns the penultimate representation, which detectors and
    feature-space analyses use.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        norm: str = "batch",
        width: int = 32,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: must be 2 or 3, got {spatial_dims}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        chans = [in_channels, width, width * 2, width * 2]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                conv(chans[i], chans[i + 1], kernel_size=3, padding=1),
                _norm(norm, chans[i + 1], spatial_dims),
                nn.ReLU(inplace=True),
            ]
            if i < 2:
                layers.append(pool(2))
        layers += [gap, nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
