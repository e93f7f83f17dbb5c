"""Shared pieces of the hardening and detection tests: one-thread CPU use, models on real BloodMNIST.

Models are trained once per process (``functools.cache``) with fixed seeds on a
3000-image subset of the training split and scored on 500 test images. The
hardening comparisons use a width-16 SmallCNN (cheap enough to train five
adversarially); detection and routing use the standard width-32 ``build_model``
CNN, whose features separate adversarial inputs better.

Torch's default of one thread per core spins badly when the machine is shared
(a gradient step ran 100x slower under load), so every test module here runs
single-threaded and restores the setting afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn

from fedaegis.shared.data import ImageSet, load_medmnist
from fedaegis.shared.hardening import build_hardening, evaluate_hardening
from fedaegis.shared.training import train_classifier
from fedaegis.shared.models import SmallCNN, build_model

BLOOD = Path(__file__).resolve().parents[2] / "shared" / "data" / "bloodmnist" / "bloodmnist.npz"
EPS = 8 / 255
SMALL_EPS = 2 / 255
N_TRAIN, N_TEST, N_CAL = 3000, 500, 500

# method -> (parameters, epochs), all warm-started from the standard width-16 model
RECIPES: dict[str, tuple[dict[str, Any], int]] = {
    "pgd-at": ({"steps": 3}, 4),
    "trades": ({"steps": 3, "beta": 6.0}, 2),
    "fast-fgsm": ({}, 2),
    "mart": ({"steps": 3, "beta": 6.0}, 2),
}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Blood(NamedTuple):
    train: ImageSet  # N_TRAIN labelled training images
    calibration: ImageSet  # N_CAL other training images (router thresholds, detector fitting)
    x_test: torch.Tensor
    y_test: torch.Tensor


@functools.cache
def _blood() -> Blood:
    train, test = load_medmnist(BLOOD, "train"), load_medmnist(BLOOD, "test")
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=gen)
    test_idx = torch.randperm(len(test), generator=gen)[:N_TEST]
    return Blood(train.subset(order[:N_TRAIN]), train.subset(order[N_TRAIN:N_TRAIN + N_CAL]),
                 test.images[test_idx], test.labels[test_idx])


def blood() -> Blood:
    """The BloodMNIST subsets; skips the test where ../shared/data is absent."""
    if not BLOOD.is_file():
        pytest.skip(f"dataset not available: {BLOOD}")
    return _blood()


@functools.cache
def standard(width: int = 16) -> nn.Module:
    """Plain training: width 16 for 6 epochs at lr 3e-3, width 32 (build_model's) for 8 at 1e-3."""
    data = blood().train
    with single_thread():
        torch.manual_seed(0)
        if width == 32:
            model = build_model("cnn", in_channels=3, num_classes=8, norm="group")
            train_classifier(model, data, epochs=8, batch_size=64, lr=1e-3)
        else:
            model = SmallCNN(3, 8, 2, "group", width=width)
            train_classifier(model, data, epochs=6, batch_size=64, lr=3e-3)
    return model.eval()


@functools.cache
def hardened(name: str) -> tuple[nn.Module, dict[str, float | int]]:
    """The standard width-16 model fine-tuned with method ``name`` (see RECIPES) and its train counts."""
    params, epochs = RECIPES[name]
    model = copy.deepcopy(standard(16))
    with single_thread():
        counts = train_classifier(model, blood().train, build_hardening(name, eps=EPS, **params),
                                  epochs=epochs, batch_size=64, lr=3e-3)
    return model.eval(), counts


@functools.cache
def hardening_table() -> dict[str, int]:
    """Clean and PGD-10 robust counts at 8/255 of the standard model and every method in RECIPES."""
    data = blood()
    systems = {"standard": standard(16), **{name: hardened(name)[0] for name in RECIPES}}
    with single_thread():
        return evaluate_hardening(systems, (data.x_test, data.y_test), [EPS], steps=10)


@functools.cache
def mahalanobis() -> nn.Module:
    """Mahalanobis detector on the width-32 standard model, fitted on its training images."""
    from fedaegis.shared.detection import MahalanobisDetector

    with single_thread():
        return MahalanobisDetector(standard(32)).fit(blood().train)


@functools.cache
def detection_scores_of(name: str) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """Clean and PGD-10 adversarial scores (successful attacks only) at 2/255 and 8/255 on the test images."""
    from fedaegis.shared.detection import detection_scores

    detector = mahalanobis() if name == "mahalanobis" else kd_bu()
    data = blood()
    with single_thread():
        return detection_scores(detector, standard(32), (data.x_test, data.y_test), [SMALL_EPS, EPS])


@functools.cache
def kd_bu() -> nn.Module:
    """KD+BU detector on the width-32 standard model; its combiner is fitted on PGD-10 examples
    at 8/255 crafted on the calibration images (never on the test images)."""
    from fedaegis.shared.attacks import build_attack
    from fedaegis.shared.detection import KDBUDetector

    cal = blood().calibration
    x = cal.images[:]  # the images as model inputs (a site's split may keep them as stored)
    model = standard(32)
    with single_thread():
        x_adv = build_attack("pgd", eps=EPS, steps=10, early_stop=False).attack(model, x, cal.labels).x_adv
        return KDBUDetector(model).fit(blood().train).fit_combiner(x, x_adv)
