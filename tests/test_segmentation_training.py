"""Local segmenter training, plain and adversarial, reports only sums and counts."""

from __future__ import annotations

import pytest
import torch
from seg_fixtures import CHANNELS_2D, EPS, slices_2d

from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.segmentation import AdversarialTraining, build_segmenter
from fedaegis.shared.training import train_segmenter


def _small():
    d = slices_2d().select_volumes(range(4))
    torch.manual_seed(0)
    return build_segmenter("unet", channels=CHANNELS_2D, num_res_units=0), d


def test_training_lowers_the_loss_and_reports_aggregates_only():
    model, d = _small()
    first = train_segmenter(model, d, epochs=1, batch_size=16, lr=3e-3, seed=0)
    for _ in range(3):
        last = train_segmenter(model, d, epochs=1, batch_size=16, lr=3e-3, seed=1)
    assert check_metrics(first) == [] and check_metrics(last) == []
    assert first["num-examples"] == len(d) == first["seg.train.samples-count"]
    assert first["seg.train.voxels-count"] == len(d) * 32 * 48
    assert last["train-loss-sum"] < first["train-loss-sum"]
    assert last["seg.train.adversarial-count"] == 0


def test_adversarial_training_attacks_every_batch_and_keeps_weights_clean():
    model, d = _small()
    before = [p.detach().clone() for p in model.parameters()]
    adv = AdversarialTraining(eps=EPS, steps=2, mix=0.5)
    m = train_segmenter(model, d, epochs=1, batch_size=32, max_steps=2, adversarial=adv, seed=0)
    assert check_metrics(m) == []
    assert m["seg.train.steps-count"] == 2 and m["seg.train.adversarial-count"] == m["seg.train.samples-count"] == 64
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad for p in model.parameters())
    only_adv = train_segmenter(model, d, max_steps=1, adversarial=AdversarialTraining(mix=1.0, norm="l2"))
    assert only_adv["seg.train.adversarial-count"] == 16


def test_adversarial_settings_are_checked():
    with pytest.raises(ValueError, match="adversarial-mix"):
        AdversarialTraining(mix=1.5)
    with pytest.raises(ValueError, match="adversarial-attack"):
        AdversarialTraining(attack="asma")
    with pytest.raises(ValueError, match="seg-attacks"):
        AdversarialTraining(attack="fgsm")
