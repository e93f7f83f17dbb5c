"""Attacks on RGB (BloodMNIST, 8 classes) and 3D (AdrenalMNIST3D) classifiers.

C&W is left out in 3D: AdrenalMNIST3D volumes are binary masks, and C&W's tanh
reparametrisation puts every voxel at the saturated ends where it barely moves.
"""

from __future__ import annotations

import pytest
import torch

from attack_fixtures import trained
from fedaegis.shared.attacks import build_attack

TOL = 1e-5


def within(x, x_adv, norm, eps):
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return bool((size <= eps * (1 + TOL) + TOL).all()) and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


@pytest.fixture(scope="module")
def blood():
    return trained("blood")


@pytest.fixture(scope="module")
def adrenal():
    return trained("adrenal3d")


@pytest.mark.parametrize("name,params", [
    ("pgd", {"eps": 4 / 255}),
    ("mifgsm", {"eps": 4 / 255}),
    ("tifgsm", {"eps": 4 / 255}),
    ("apgd", {"eps": 4 / 255, "steps": 10}),
    ("apgdt", {"eps": 4 / 255, "steps": 10, "n_target_classes": 3}),
    ("fab", {"eps": 4 / 255, "steps": 10, "n_target_classes": 3}),
    ("deepfool", {"eps": 0.3}),
    ("square", {"eps": 4 / 255, "n_queries": 100}),
    ("square", {"norm": "l2", "eps": 0.5, "n_queries": 100}),
    ("onepixel", {"pixels": 3, "popsize": 16, "generations": 4}),
    ("watermark", {"eps": 0.3, "stride": 4}),
])
def test_rgb(blood, name, params):
    x, y = blood.x, blood.y
    atk = build_attack(name, **params)
    res = atk.attack(blood.model, x, y)
    assert res.clean_correct > 0.5 * res.n
    assert res.robust_correct < res.clean_correct
    assert within(x, res.x_adv, atk.threat.norm, atk.threat.eps)


def test_rgb_targeted_least_likely(blood):
    x, y = blood.x, blood.y
    res = build_attack("pgd", eps=8 / 255, steps=20, targeted=True).attack(blood.model, x, y)
    with torch.inference_mode():
        logits = blood.model(x)
        hit = blood.model(res.x_adv).argmax(1) == logits.argmin(1)
    assert res.successes == int(((logits.argmax(1) == y) & hit).sum())
    assert res.successes > 0


def test_apgd_targeted_dlr(blood):
    x, y = blood.x, blood.y
    res = build_attack("apgd", eps=8 / 255, steps=20, loss="dlr", targeted=True, target=0).attack(
        blood.model, x, y)
    assert res.successes > 0


@pytest.mark.parametrize("name,params", [
    ("fgsm", {"eps": 8 / 255}),
    ("pgd", {"eps": 8 / 255, "steps": 5}),
    ("tifgsm", {"eps": 8 / 255, "steps": 5, "kernel_size": 5}),
    ("apgd", {"eps": 8 / 255, "steps": 5}),
    ("fab", {"eps": 8 / 255, "steps": 5, "n_target_classes": 1}),
    ("deepfool", {"eps": 2.0}),
    ("square", {"eps": 8 / 255, "n_queries": 30}),
    ("square", {"norm": "l2", "eps": 2.0, "n_queries": 30}),
    ("onepixel", {"pixels": 100, "popsize": 8, "generations": 3}),
    ("watermark", {"eps": 0.5, "stride": 6, "scales": (2,)}),
    ("universal", {"eps": 8 / 255, "epochs": 3}),
    ("fmn", {"eps": 8 / 255, "steps": 10}),
])
def test_3d(adrenal, name, params):
    x, y = adrenal.x, adrenal.y
    assert x.dim() == 5
    atk = build_attack(name, **params)
    res = atk.attack(adrenal.model, x, y)
    assert res.clean_correct > 0
    assert res.robust_correct < res.clean_correct, name
    assert within(x, res.x_adv, atk.threat.norm, atk.threat.eps)


def test_3d_seeded(adrenal):
    x, y = adrenal.x[:8], adrenal.y[:8]
    a = build_attack("square", eps=8 / 255, n_queries=20, seed=7).attack(adrenal.model, x, y)
    b = build_attack("square", eps=8 / 255, n_queries=20, seed=7).attack(adrenal.model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
