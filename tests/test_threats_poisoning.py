"""Label flipping and model replacement: the arithmetic a malicious site relies on."""

from __future__ import annotations

import pytest
import torch

from fedaegis.shared.data import ImageSet
from fedaegis.shared.models import SmallCNN
from fedaegis.shared.threats import boost_update, flip_imageset, flip_labels, replacement_boost


def test_flip_reverses_labels_by_default():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    assert flip_labels(labels, 8).tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    assert flip_labels(torch.tensor([0, 1, 1]), 2).tolist() == [1, 0, 0]


def test_flip_by_map_changes_only_the_source_class():
    labels = torch.tensor([0, 1, 2, 1, 3])
    assert flip_labels(labels, 4, mapping={1: 0}).tolist() == [0, 0, 2, 0, 3]
    with pytest.raises(ValueError, match="mapping"):
        flip_labels(labels, 4, mapping={1: 9})


def test_flip_a_fraction_is_reproducible():
    labels = torch.ones(100, dtype=torch.long)
    flipped = flip_labels(labels, 2, fraction=0.3, seed=1)
    assert int((flipped != labels).sum()) == 30
    assert torch.equal(flipped, flip_labels(labels, 2, fraction=0.3, seed=1))
    site = flip_imageset(ImageSet(torch.zeros(100, 1, 4, 4), labels, 2, "site"), fraction=0.3, seed=1)
    assert torch.equal(site.labels, flipped)


def test_boost_is_sites_over_malicious_over_server_lr():
    assert replacement_boost(10) == 10
    assert replacement_boost(10, 2) == 5
    assert replacement_boost(10, 2, server_lr=0.5) == 10
    for bad in ((3, 0), (2, 3)):
        with pytest.raises(ValueError):
            replacement_boost(*bad)


def test_boosted_update_replaces_the_global_model_under_fedavg():
    """n-1 converged benign sites send the global model; the average lands on the attacker's model."""
    torch.manual_seed(0)
    global_state = SmallCNN(1, 2, norm="batch", width=4).state_dict()
    local = {k: v + 0.01 * torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v + 7
             for k, v in global_state.items()}
    n = 5
    sent = boost_update(global_state, local, replacement_boost(n, 1))
    for k, v in global_state.items():
        if v.is_floating_point():
            torch.testing.assert_close(sent[k], v + n * (local[k] - v))
            averaged = (sent[k] + (n - 1) * v) / n
            torch.testing.assert_close(averaged, local[k], rtol=1e-5, atol=1e-6)
        else:  # BatchNorm's counter travels unscaled
            assert torch.equal(sent[k], local[k])
    with pytest.raises(ValueError, match="keys"):
        boost_update(global_state, {"x": torch.zeros(1)}, 2.0)
