"""Stored images -> model inputs, batch by batch, by one MONAI pipeline for every loader.

A site keeps its images as stored (uint8 MedMNIST, 16-bit folders): a 10,000-image site at
224 px is 0.5 GB as bytes but 2-6 GB as float32, per Ray actor. Each batch is turned into
float32 inputs only when it is used: intensity scaling from the stored range onto [0, 1]
(DICOM windowing is applied when the file is read), grey <-> RGB, a resize that keeps the
aspect ratio and pads the rest (a 600x970 photo is not squashed), and optional training
augmentation. The same pipeline serves training, evaluation and attacks, so what a model is
trained on and what it is attacked on never differ.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .types import to_channels

log = logging.getLogger("fedaegis.data")

#: ``image-size`` is chosen from these when not given: see :func:`choose_image_size`.
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)
SIZE_RULE = "the largest of 28/64/128/224 (volumes: 28/64) not above the images' median longer side"


def choose_image_size(longest_sides: Sequence[int], spatial_dims: int = 2) -> int:
    """The largest of 28/64/128/224 (3D: 28/64) not above the median of the images' longer sides.

    Images are never blown up on average, and never cost more than a 224 px (64^3) model
    input; images smaller than 28 px are lifted to 28.
    """
    if not len(longest_sides):
        raise ValueError("image_size: no images to choose a size from")
    median = float(np.median(np.asarray(longest_sides, dtype=np.float64)))
    sizes = SIZES_2D if spatial_dims == 2 else SIZES_3D
    fitting = [s for s in sizes if s <= median]
    return max(fitting) if fitting else sizes[0]


def fitted_shape(spatial: Sequence[int], target: Sequence[int]) -> tuple[int, ...]:
    """``spatial`` scaled by one factor so that it fits inside ``target`` (aspect ratio kept)."""
    factor = min(t / s for s, t in zip(spatial, target, strict=True))
    return tuple(max(1, min(t, round(s * factor))) for s, t in zip(spatial, target, strict=True))


def resize_keep_aspect(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, *spatial) float in [0, 1] -> (N, C, *size): MONAI Resize keeping the aspect ratio, then zero padding.

    2D shrinks with antialiased bilinear interpolation (a 1024^2 radiograph shrunk to 28^2 is
    averaged, not aliased); 3D uses area averaging when shrinking, trilinear otherwise.
    """
    from monai.transforms import Resize, SpatialPad

    size = tuple(int(s) for s in size)
    spatial = tuple(int(s) for s in images.shape[2:])
    if len(size) != len(spatial):
        raise ValueError(f"image_size: {size} has {len(size)} dims, images have {len(spatial)}")
    if any(s < 1 for s in size):
        raise ValueError(f"image_size: every size must be >= 1, got {size}")
    if size == spatial:
        return images
    inner = fitted_shape(spatial, size)
    n, c = images.shape[:2]
    x = images.float().reshape(n * c, *spatial)  # MONAI transforms take one channel-first image
    if inner != spatial:
        if len(size) == 2:
            resize = Resize(inner, mode="bilinear", anti_aliasing=any(i < s for i, s in zip(inner, spatial)))
        elif all(i <= s for i, s in zip(inner, spatial)):
            resize = Resize(inner, mode="area")
        else:
            resize = Resize(inner, mode="trilinear")
        x = resize(x)
    if inner != size:
        x = SpatialPad(size, method="symmetric")(x)
    return _plain(x).reshape(n, c, *size).clamp_(0.0, 1.0)


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor must not reach models and attacks."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _augmentation(spatial_dims: int, seed: int):
    from monai.transforms import Compose, RandAffine, RandFlip

    aug = Compose([
        RandFlip(prob=0.5, spatial_axis=spatial_dims - 1),
        RandAffine(prob=0.5, rotate_range=(0.1,) * (1 if spatial_dims == 2 else 3), scale_range=0.1,
                   padding_mode="zeros"),
    ])
    aug.set_random_state(seed)
    return aug


@dataclass
class InputPipeline:
    """How one site's stored images become float32 model inputs in [0, 1].

    ``scale`` is the stored value that means 1.0 (255 for uint8, 65535 for 16-bit, 1 for
    float); ``channels`` and ``size`` (None: as stored) make every site match the model;
    ``augment`` adds random flips and small affine changes (training only).
    """

    scale: float = 1.0
    channels: int | None = None
    size: tuple[int, ...] | None = None
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self._aug = None

    def out_shape(self, stored_shape: Sequence[int]) -> tuple[int, ...]:
        """(C, *spatial) of the inputs made from stored items of ``stored_shape`` (C, *spatial)."""
        c = stored_shape[0] if self.channels is None else self.channels
        spatial = tuple(stored_shape[1:]) if self.size is None else tuple(self.size)
        return (int(c), *(int(s) for s in spatial))

    def __call__(self, stored: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) stored -> (N, channels, *size) float32 inputs."""
        # x / 255 in float32, the same numbers as the eager loaders always gave
        x = stored.to(torch.float32) if stored.dtype != torch.float32 else stored
        if self.scale != 1.0:
            x = x / self.scale
        if self.size is not None:  # before grey -> RGB: one resize per image, identical channels
            x = resize_keep_aspect(x, self.size)
        if self.channels is not None:
            x = to_channels(x, self.channels)
        if self.augment:
            if self._aug is None:
                self._aug = _augmentation(x.dim() - 2, self.seed)
            x = torch.stack([_plain(self._aug(item)) for item in x]).clamp_(0.0, 1.0)
        return x
