"""Every segmentation attack hurts a UNet trained on real hippocampus MRI within its budget."""

from __future__ import annotations

import math

import pytest
import torch
from seg_fixtures import EPS, trained_2d, trained_3d

from fedaegis.shared.segmentation import make_target, robust_dice, target_iou, volume_scores
from fedaegis.shared.segmentation.attacks import (
    ATTACKS,
    SegmentationAttack,
    attack_mode,
    build_attack,
    l2_radius,
    predict,
    project,
    shift_structure,
)
from fedaegis.shared.attacks.base import Attack
from fedaegis.shared.segmentation.metrics import mean_dice

STEPS = 10
TARGET = "shift:3"


def _mean_dice(model, x, y, vi) -> float:
    return float(mean_dice(volume_scores(predict(model, x), y, vi, 3, hd95=False).dice).mean())


def _check_budget(x, x_adv, norm, eps):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= eps * (1 + 1e-5)


@pytest.mark.parametrize("name,norm", [("pgd", "linf"), ("pgd", "l2"), ("dag", "linf"), ("multiscale", "linf")])
def test_untargeted_attacks_lower_dice_within_budget(name, norm):
    model, _, test = trained_2d()
    x, y, vi = test.images, test.masks, test.volume_index
    clean = _mean_dice(model, x, y, vi)
    assert clean > 0.5, "the fixture model should segment the hippocampus"
    eps = l2_radius(EPS, x) if norm == "l2" else EPS
    x_adv = build_attack(name, eps=eps, norm=norm, steps=STEPS).perturb(model, x, y)
    _check_budget(x, x_adv, norm, eps)
    assert _mean_dice(model, x_adv, y, vi) < clean - 0.02


def test_asma_drives_the_prediction_towards_a_shifted_structure():
    model, _, test = trained_2d()
    x, y, vi = test.images, test.masks, test.volume_index
    clean_pred = predict(model, x)
    target = make_target(clean_pred, TARGET)  # the model's own output, moved 3 voxels
    asma = build_attack("asma", eps=EPS, steps=STEPS)
    x_adv = asma.perturb(model, x, y, target)
    _check_budget(x, x_adv, "linf", EPS)
    adv_pred = predict(model, x_adv)
    assert float(target_iou(adv_pred, target, vi).mean()) > float(target_iou(clean_pred, target, vi).mean()) + 0.02
    assert _mean_dice(model, x_adv, y, vi) < _mean_dice(model, x, y, vi)
    with pytest.raises(ValueError, match="target_mask"):
        asma.perturb(model, x[:2], y[:2])


def test_robust_dice_is_no_higher_than_any_single_attack():
    model, _, test = trained_2d()
    sub = test.select_volumes([0, 1])
    x, y, vi = sub.images, sub.masks, sub.volume_index
    res = robust_dice(model, x, y, vi, ["pgd", "dag", "multiscale", "asma"], eps=EPS, steps=3,
                      target_mask=make_target(y, TARGET))
    robust = mean_dice(res.dice)
    for outcome in res.outcomes:
        assert bool((robust <= mean_dice(outcome.scores.dice) + 1e-6).all())
    clean = mean_dice(volume_scores(predict(model, x), y, vi, 3, hd95=False).dice)
    assert bool((robust <= clean + 1e-6).all())
    assert res.labels == ("clean", "pgd", "dag", "multiscale", "asma") and res.worst.shape == (2,)


def test_attacks_are_batched_seeded_and_leave_the_model_untouched():
    model, _, test = trained_2d()
    x, y = test.images[:8], test.masks[:8]
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd = build_attack("pgd", eps=EPS, steps=2, seed=1)
    a = pgd.perturb(model, x, y)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(a, pgd.perturb(model, x, y))
    # sample i's result does not depend on its batch-mates (GroupNorm, per-sample steps)
    fixed = build_attack("pgd", eps=EPS, steps=2, random_init=False)
    assert torch.allclose(fixed.perturb(model, x[:1], y[:1]), fixed.perturb(model, x, y)[:1], atol=1e-6)


def test_attacks_work_on_tensors_made_under_inference_mode():
    model, _, test = trained_2d()
    with torch.inference_mode():
        x, y = test.images[:4].clone(), test.masks[:4].clone()
        target = make_target(y, TARGET)
    for name in ATTACKS:
        x_adv = build_attack(name, eps=EPS, steps=1).perturb(model, x, y, target if name == "asma" else None)
        _check_budget(x, x_adv, "linf", EPS)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_exact_and_idempotent(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 6, 6, generator=g)
    far = x + torch.randn(4, 1, 6, 6, generator=g)
    eps = 0.05 if norm == "linf" else 0.5
    p = project(x, far, norm, eps)
    _check_budget(x, p, norm, eps)
    assert torch.equal(project(x, p, norm, eps), p)
    inside = project(x, x + 0.001, norm, eps)
    assert torch.allclose(inside, (x + 0.001).clamp(0, 1))


def test_bad_inputs_are_refused_with_the_field_named():
    model, _, test = trained_2d()
    x, y = test.images[:2], test.masks[:2]
    with pytest.raises(ValueError, match="norm"):
        build_attack("pgd", eps=EPS, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        build_attack("pgd", eps=math.inf)
    with pytest.raises(ValueError, match="steps"):
        build_attack("dag", eps=EPS, steps=0)
    with pytest.raises(ValueError, match="shift"):
        build_attack("pgd", eps=EPS, shift=2)  # a DAG parameter, not PGD's
    pgd = build_attack("pgd", eps=EPS)
    with pytest.raises(ValueError, match="x: inputs"):
        pgd.perturb(model, x * 2, y)
    with pytest.raises(ValueError, match="y_mask"):
        pgd.perturb(model, x, y[:1])


def test_targets_remove_or_shift_a_structure():
    m = torch.zeros(1, 6, 8, dtype=torch.long)
    m[0, 2:4, 1:3] = 1
    m[0, 2:4, 3:5] = 2
    assert set(make_target(m, "remove:1").unique().tolist()) == {0, 2}
    s = shift_structure(m, 2)
    assert torch.equal(s[0, 2:4, 3:5], m[0, 2:4, 1:3]) and torch.equal(s[0, 2:4, 5:7], m[0, 2:4, 3:5])
    assert int((s > 0).sum()) == int((m > 0).sum()) and int((s[0, :, :3] > 0).sum()) == 0
    only2 = shift_structure(m, -1, axis=0, label=2)
    assert torch.equal(only2[0, 1:3, 3:5], m[0, 2:4, 3:5]) and torch.equal(only2[0, 2:4, 1:3], m[0, 2:4, 1:3])
    assert torch.equal(make_target(m, "shift:2"), s)
    with pytest.raises(ValueError, match="target"):
        make_target(m, "grow:1")


def test_3d_smoke_attacks_a_tiny_3d_unet():
    model, _, test = trained_3d()
    x, y, vi = test.images, test.masks, test.volume_index
    assert x.dim() == 5
    x_adv = build_attack("pgd", eps=EPS, steps=3).perturb(model, x, y)
    _check_budget(x, x_adv, "linf", EPS)
    r = l2_radius(EPS, x)
    x_t = build_attack("asma", eps=r, norm="l2", steps=3).perturb(model, x, y, make_target(y, TARGET))
    _check_budget(x, x_t, "l2", r)
    assert predict(model, x_adv).shape == y.shape
    with attack_mode(model):
        assert not model.training


def test_segmentation_attacks_are_attacks_of_the_library():
    """One contract for classifiers and segmenters: each attack is an ``Attack`` with a threat model."""
    for name, cls in ATTACKS.items():
        assert issubclass(cls, SegmentationAttack) and issubclass(cls, Attack) and cls.name == name
    atk = build_attack("dag", eps=EPS, steps=2).with_threat(eps=2 * EPS)
    assert atk.threat.eps == 2 * EPS and atk.steps == 2
    model, _, test = trained_2d()
    with pytest.raises(TypeError, match="perturb"):
        atk.attack(model, test.images[:2], test.masks[:2])
