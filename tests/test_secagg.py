"""Pairwise-masking secure aggregation: exact sums, dropout recovery, nothing per site."""

from __future__ import annotations

import pytest

from fedaegis.shared import secagg

SITES = {5: {"num-examples": 10, "correct": 7, "loss-sum": 3.25},
         9: {"num-examples": 20, "correct": 11, "loss-sum": 8.5},
         13: {"num-examples": 5, "correct": 5, "loss-sum": 0.125}}


def _setup():
    keys = {n: secagg.new_keypair() for n in SITES}
    pks = {n: k[1] for n, k in keys.items()}
    masked = {n: secagg.masked_metrics(SITES[n], keys[n][0], n, pks, b"run/1") for n in SITES}
    return keys, pks, masked


def test_masks_cancel_in_the_sum():
    _, _, masked = _setup()
    assert secagg.unmask_total(list(masked.values())) == {"correct": 23.0, "loss-sum": 11.875, "num-examples": 35.0}


def test_a_single_masked_reply_reveals_nothing_recognisable():
    _, _, masked = _setup()
    for node, values in masked.items():
        plain = secagg.encode([SITES[node][k] for k in sorted(SITES[node])])
        assert all(int(v) != int(p) for v, p in zip(values.values(), plain))
        assert all(0 <= v < secagg.MODULUS for v in values.values())
    assert secagg.unmask_total([masked[5]]) != {k: float(v) for k, v in SITES[5].items()}


def test_dropout_is_recovered_from_the_survivors_pair_masks():
    keys, pks, masked = _setup()
    names = sorted(SITES[5])
    corrections = [
        {secagg.PREFIX + k: int(v) for k, v in zip(names, secagg.mask_sum(keys[n][0], n, {13: pks[13]}, b"run/1", 3))}
        for n in (5, 9)
    ]
    total = secagg.unmask_total([masked[5], masked[9]], corrections)
    assert total == {"correct": 18.0, "loss-sum": 11.75, "num-examples": 30.0}


def test_different_metric_names_are_refused():
    _, _, masked = _setup()
    bad = dict(masked[9])
    bad["secagg.extra-count"] = 1
    with pytest.raises(ValueError, match="different metric names"):
        secagg.unmask_total([masked[5], bad])
