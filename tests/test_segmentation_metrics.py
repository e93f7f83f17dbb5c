"""Per-volume Dice/HD95/IoU on hand-made masks, and their reduction to sums and counts."""

from __future__ import annotations

import math

import pytest
import torch

from fedaegis.shared.reply.protocol import is_aggregate_name
from fedaegis.shared.segmentation.metrics import (
    label_iou,
    perturbation_norms,
    score_fields,
    target_iou,
    volume_scores,
)


def _volume() -> torch.Tensor:
    m = torch.zeros(4, 10, 10, dtype=torch.long)
    m[1:3, 2:6, 2:6] = 1  # 32 voxels
    m[1:3, 6:8, 6:8] = 2  # 8 voxels
    return m


def test_dice_per_class_and_volume_matches_hand_computation():
    y = _volume()
    p = y.clone()
    p[1, 2:6, 2:4] = 0  # drop 8 of the 32 class-1 voxels
    s = volume_scores(p[None], y[None], torch.tensor([0]), 3)  # one 3D volume
    assert torch.allclose(s.dice, torch.tensor([[2 * 24 / (24 + 32), 1.0]]))
    assert s.hd95 is not None and s.hd95.shape == (1, 2) and float(s.hd95[0, 1]) == 0.0


def test_2d_slices_are_scored_as_their_stacked_volume():
    y, p = _volume(), _volume()
    p[2, 6:8, 6:8] = 0
    three_d = volume_scores(p[None], y[None], torch.tensor([0]), 3)
    # the same volume as 4 slices, interleaved with a second (identical) volume
    ys, ps = torch.cat([y, y]), torch.cat([p, y])
    vi = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    two_d = volume_scores(ps, ys, vi, 3)
    assert torch.allclose(two_d.dice[0], three_d.dice[0]) and torch.allclose(two_d.dice[1], torch.ones(2))
    assert torch.allclose(two_d.hd95[0], three_d.hd95[0])


def test_fields_are_sums_and_counts_that_skip_undefined_values():
    y = _volume()
    no2 = y.clone()
    no2[no2 == 2] = 0  # ground truth without class 2: its Dice is undefined
    lost = y.clone()
    lost[lost == 2] = 0  # prediction lost class 2: Dice 0, HD95 undefined
    s = volume_scores(torch.stack([y, lost, no2]), torch.stack([y, y, no2]), torch.tensor([0, 1, 2]), 3)
    f = score_fields(s)
    assert all(is_aggregate_name(k) for k in f)
    assert f["dice-class1-count"] == 3 and math.isclose(f["dice-class1-sum"], 3.0)
    assert f["dice-class2-count"] == 2 and math.isclose(f["dice-class2-sum"], 1.0)
    assert f["dice-count"] == 3 and math.isclose(f["dice-sum"], 1.0 + 0.5 + 1.0)
    assert f["hd95-class2-count"] == 1 and f["hd95-class2-undefined-count"] == 1


def test_label_iou_moves_smoothly_as_a_structure_is_erased():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, :2, :2] = 2  # 4 voxels that stay
    pred = target.clone()
    pred[0, 5:9, 5:9] = 1  # 16 voxels the target removes
    assert float(label_iou(pred, target)) == pytest.approx(4 / 20)
    pred[0, 5:7, 5:9] = 0  # half erased
    assert float(label_iou(pred, target)) == pytest.approx(4 / 12)
    assert float(label_iou(target, target)) == 1.0
    empty = torch.zeros(1, 3, 3, dtype=torch.long)
    assert float(label_iou(empty, empty)) == 1.0
    assert torch.allclose(target_iou(pred.expand(2, -1, -1), target.expand(2, -1, -1), torch.tensor([0, 0])),
                          torch.tensor([4 / 12]))


def test_perturbation_norms_are_per_volume():
    x = torch.zeros(3, 1, 2, 2)
    xa = x.clone()
    xa[0, 0, 0, 0], xa[1, 0, 1, 1], xa[2, 0, 0, 1] = 0.3, 0.4, 0.1
    linf, l2 = perturbation_norms(x, xa, torch.tensor([0, 0, 1]))
    assert torch.allclose(linf, torch.tensor([0.4, 0.1])) and torch.allclose(l2, torch.tensor([0.5, 0.1]))
