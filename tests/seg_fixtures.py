"""Real hippocampus MRI and small segmenters trained on it, shared by the segmentation tests.

Everything is built once per process (``functools.cache``) with fixed seeds, so every test
module sees the same data and weights. Tests skip when the data is not beside the checkout.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from torch import nn

from fedaegis.shared.segmentation import SegmentationSet, build_segmenter, load_hippocampus, split_sites
from fedaegis.shared.training import train_segmenter

HIPPOCAMPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "msd_hippocampus"
EPS = 4 / 255
CHANNELS_2D = (8, 16, 32, 64)
CHANNELS_3D = (4, 8, 16)
SIZE_3D_TINY = (16, 24, 16)


class Trained(NamedTuple):
    model: nn.Module
    train: SegmentationSet
    test: SegmentationSet


def data_root() -> Path:
    if not (HIPPOCAMPUS / "imagesTr").is_dir():
        pytest.skip(f"hippocampus data not available: {HIPPOCAMPUS}")
    return HIPPOCAMPUS


@functools.cache
def slices_2d() -> SegmentationSet:
    """Labelled 32x48 slices of 20 seeded-random volumes."""
    return load_hippocampus(data_root(), spatial_dims=2, max_volumes=20, seed=0)


@functools.cache
def volumes_3d_tiny() -> SegmentationSet:
    """Eight whole volumes resized to 16x24x16, for 3D smoke tests."""
    return load_hippocampus(data_root(), spatial_dims=3, size=SIZE_3D_TINY, resize_mode="resize",
                            max_volumes=8, seed=0)


@functools.cache
def trained_2d() -> Trained:
    """A 2D UNet after 150 Adam steps on 16 patients; 4 held-out patients to attack."""
    site = split_sites(slices_2d(), 1, test_fraction=0.2, seed=0)[0]
    torch.manual_seed(0)
    model = build_segmenter("unet", spatial_dims=2, channels=CHANNELS_2D, num_res_units=0)
    train_segmenter(model, site.train, epochs=100, batch_size=16, lr=3e-3, max_steps=150, seed=0)
    return Trained(model.eval(), site.train, site.test)


@functools.cache
def trained_3d() -> Trained:
    """A tiny 3D UNet after 30 steps on 6 patients (a smoke test, not a good segmenter)."""
    site = split_sites(volumes_3d_tiny(), 1, test_fraction=0.25, seed=0)[0]
    torch.manual_seed(0)
    model = build_segmenter("unet", spatial_dims=3, channels=CHANNELS_3D, num_res_units=0)
    train_segmenter(model, site.train, epochs=100, batch_size=3, lr=5e-3, max_steps=30, seed=0)
    return Trained(model.eval(), site.train, site.test)
