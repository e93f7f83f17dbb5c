"""Models a user brings by import path (``model = "byo_models:tiny"``), for tests/test_models_custom.py."""

from __future__ import annotations

from torch import nn


def tiny(in_channels: int, num_classes: int, spatial_dims: int = 2) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(conv(in_channels, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(), nn.Linear(4, num_classes))


def wrong_outputs(in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(7))


def not_a_module() -> int:
    return 3
