"""Small trained models on real MedMNIST data for the attack tests and benchmark.

Models are trained once per process (``functools.cache``) with fixed seeds, so
every test module sees the same weights. Data is read straight from the .npz
files so these tests do not depend on the data loaders.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedaegis.shared.models import SmallCNN

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# name -> (file, spatial_dims, channels, classes, width, train steps, train batch, test subset)
SETS = {
    "pneumonia": ("pneumoniamnist/pneumoniamnist.npz", 2, 1, 2, 32, 400, 64, 128),
    "blood": ("bloodmnist/bloodmnist.npz", 2, 3, 8, 16, 300, 64, 96),
    "adrenal3d": ("adrenalmnist3d/adrenalmnist3d.npz", 3, 1, 2, 8, 60, 16, 24),
}


class Trained(NamedTuple):
    model: nn.Module
    x: torch.Tensor  # test subset, float in [0, 1]
    y: torch.Tensor
    num_classes: int


def _to_tensor(images: np.ndarray, channels: int, spatial_dims: int) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if channels == 3:  # (N, H, W, 3) -> (N, 3, H, W)
        return x.permute(0, 3, 1, 2).contiguous()
    return x.unsqueeze(1)


def load(name: str, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, ...) in [0, 1] and int64 labels (N,) of one split; skips if data is absent."""
    file, dims, channels, *_ = SETS[name]
    path = DATA / file
    if not path.exists():
        pytest.skip(f"dataset not available: {path}")
    with np.load(path) as d:
        images, labels = d[f"{split}_images"], d[f"{split}_labels"]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _to_tensor(images, channels, dims), torch.from_numpy(labels.reshape(-1).astype(np.int64))


def recalibrate_bn(model: nn.Module, x: torch.Tensor, gen: torch.Generator, batches: int = 8) -> None:
    """Re-estimate BatchNorm statistics for the final weights (Adam moves them faster than
    the running averages follow, which otherwise ruins eval-mode accuracy)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(x[torch.randint(0, x.shape[0], (256,), generator=gen)])
    for m in bns:
        m.momentum = 0.1
    model.eval()


@functools.cache
def trained(name: str) -> Trained:
    """A narrow SmallCNN trained for a few hundred Adam steps on the training split (seeded)."""
    _, dims, channels, classes, width, steps, batch, n_test = SETS[name]
    torch.manual_seed(0)
    model = SmallCNN(channels, classes, dims, "batch", width)
    x_test, y_test = load(name, "test")
    # A fixed, class-mixed subset: every k-th test image.
    step = max(1, x_test.shape[0] // n_test)
    subset = (x_test[::step][:n_test].contiguous(), y_test[::step][:n_test].contiguous())
    # Optional weight cache for local re-runs (FEDAEGIS_ATTACK_TEST_CACHE=/some/dir).
    cache_dir = os.environ.get("FEDAEGIS_ATTACK_TEST_CACHE")
    cache = Path(cache_dir) / f"{name}-w{width}-s{steps}-b{batch}.pt" if cache_dir else None
    if cache is not None and cache.exists():
        model.load_state_dict(torch.load(cache))
        model.eval()
        return Trained(model, *subset, classes)
    x_train, y_train = load(name, "train")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    # class-balanced batches: AdrenalMNIST3D is 3:1 and a few steps would learn the prior only
    weights = (1.0 / torch.bincount(y_train).float())[y_train]
    for _ in range(steps):
        i = torch.multinomial(weights, batch, replacement=True, generator=gen)
        loss = F.cross_entropy(model(x_train[i]), y_train[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    recalibrate_bn(model, x_train, gen)
    for p in model.parameters():
        p.grad = None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)
    return Trained(model, *subset, classes)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())
