"""Segmentation networks by name: MONAI UNet and SegResNet, 2D or 3D, sized for CPUs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.networks.nets import SegResNet, UNet
from torch import nn

SEG_MODELS = ("unet", "segresnet")
SEG_NORMS = ("group", "batch", "instance")
DEFAULT_CHANNELS = (8, 16, 32, 64)


def build_segmenter(
    name: str = "unet",
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 3,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    num_res_units: int = 0,
    norm: str = "group",
    num_groups: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """A segmenter mapping (N, C, *spatial) to (N, num_classes, *spatial) logits.

    ``channels`` are the feature widths per level (UNet halves the resolution between
    levels, so inputs must be divisible by ``2 ** (len(channels) - 1)``, see
    :func:`size_multiple`). ``num_res_units`` defaults to MONAI's 0 (one conv per level;
    each residual unit roughly doubles the cost). ``norm='group'`` is the default because
    federated sites train on small, differently distributed batches (BatchNorm statistics
    would not average sensibly) and Opacus' DP-SGD accepts GroupNorm but not BatchNorm.
    """
    if name not in SEG_MODELS:
        raise ValueError(f"seg-model: unknown segmenter {name!r}; choose one of {SEG_MODELS}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: must be 2 or 3, got {spatial_dims}")
    if norm not in SEG_NORMS:
        raise ValueError(f"norm: must be one of {SEG_NORMS}, got {norm!r}")
    channels = tuple(int(c) for c in channels)
    if len(channels) < 2 or min(channels) < 1:
        raise ValueError(f"channels: need at least two positive widths, got {channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes: need at least 2, got {num_classes}")
    if name == "unet":
        # MONAI's UNet gives one norm to every layer, including the one with num_classes
        # channels; GroupNorm is swapped in afterwards with a group count each layer divides.
        model: nn.Module = UNet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
            channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=num_res_units,
            norm="batch" if norm == "group" else norm, dropout=dropout,
        )
        return batch_to_group_norm(model, num_groups) if norm == "group" else model
    seg_norm = {
        "group": ("GROUP", {"num_groups": math.gcd(num_groups, channels[0])}),
        "batch": ("BATCH", {}),
        "instance": ("INSTANCE", {}),
    }[norm]
    return SegResNet(
        spatial_dims=spatial_dims, init_filters=channels[0], in_channels=in_channels,
        out_channels=num_classes, blocks_down=(1, 2, 2, 4)[: len(channels)],
        blocks_up=(1,) * (len(channels) - 1), norm=seg_norm, dropout_prob=dropout or None,
    )


def size_multiple(channels: Sequence[int] = DEFAULT_CHANNELS) -> int:
    """What every spatial size must be divisible by for a network with these levels."""
    return 2 ** (len(tuple(channels)) - 1)


def batch_to_group_norm(model: nn.Module, num_groups: int = 4) -> nn.Module:
    """Replace every BatchNorm by GroupNorm with ``gcd(num_groups, channels)`` groups, in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            c = child.num_features
            setattr(model, name, nn.GroupNorm(math.gcd(num_groups, c), c, affine=child.affine))
        else:
            batch_to_group_norm(child, num_groups)
    return model
