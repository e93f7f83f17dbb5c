"""ROG's segmentation AutoAttack (APGD-CE, APGD-DLR, FAB-T, Square, worst case per sample) on real
hippocampus MRI, 2D and 3D, against the segmentation ensemble the project already had."""

from __future__ import annotations

import pytest
import torch
from seg_fixtures import EPS, trained_2d, trained_3d

from fedaegis.shared.segmentation import volume_scores
from fedaegis.shared.segmentation.attacks import ROG, build_attack, predict, robust_dice
from fedaegis.shared.segmentation.attacks.apgd import checkpoints
from fedaegis.shared.segmentation.metrics import mean_dice

ENSEMBLE = ["pgd", "dag", "multiscale"]  # the untargeted attacks before ROG


def _budget_ok(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> bool:
    return bool((x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1)


def test_apgd_checkpoints_follow_croce_and_hein() -> None:
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_rog_is_as_strong_as_the_segmentation_ensemble_in_2d() -> None:
    model, _, test = trained_2d()
    sub = test.select_volumes([0, 1, 2])
    x, y, vi = sub.images, sub.masks, sub.volume_index
    clean = mean_dice(volume_scores(predict(model, x), y, vi, 3, hd95=False).dice)
    before = robust_dice(model, x, y, vi, ENSEMBLE, eps=EPS, steps=10)
    rog = robust_dice(model, x, y, vi, ["rog"], eps=EPS, steps=10)
    both = robust_dice(model, x, y, vi, [*ENSEMBLE, "rog"], eps=EPS, steps=10)
    b, r, u = (float(mean_dice(res.dice).mean()) for res in (before, rog, both))
    print(f"\nmean robust Dice at {EPS * 255:.0f}/255 over 3 patients: clean {float(clean.mean()):.4f}, "
          f"ensemble {b:.4f}, ROG {r:.4f}, both {u:.4f}")
    for x_adv in [build_attack(name, eps=EPS, steps=2).perturb(model, x[:8], y[:8]) for name in ROG]:
        assert _budget_ok(x[:8], x_adv, EPS)
    assert r < float(clean.mean()) - 0.05
    assert r <= b + 0.005  # on par with the ensemble or stronger (measured: 0.6499 vs 0.6542)
    assert u <= min(b, r) + 1e-6


def test_rog_lowers_dice_of_a_3d_unet_within_budget() -> None:
    model, _, test = trained_3d()
    x, y, vi = test.images, test.masks, test.volume_index
    res = robust_dice(model, x, y, vi, list(ROG), eps=EPS, steps=3)
    clean = mean_dice(volume_scores(predict(model, x), y, vi, 3, hd95=False).dice)
    assert bool((mean_dice(res.dice) <= clean + 1e-6).all())
    for outcome in res.outcomes:
        assert float(outcome.linf.max()) <= EPS + 1e-6
    with pytest.raises(ValueError, match="norm"):
        build_attack("square", eps=EPS, norm="l2", steps=2)
