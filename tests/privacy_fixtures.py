"""Shared helpers for the threat and privacy tests: real MedMNIST splits, one torch thread.

Gradient inversion runs thousands of tiny double-backward passes; on a busy 2-core
machine torch's intra-op threads only contend, so these tests pin one thread (restored
afterwards).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from fedaegis.shared.data import ImageSet, load_medmnist

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@functools.cache
def _load(name: str, split: str) -> ImageSet:
    return load_medmnist(DATA / name / f"{name}.npz", split)


def medmnist(name: str, split: str) -> ImageSet:
    """One split of a MedMNIST file beside the checkout; skips the test if it is absent."""
    if not (DATA / name / f"{name}.npz").exists():
        pytest.skip(f"../shared/data/{name} is not present")
    return _load(name, split)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
