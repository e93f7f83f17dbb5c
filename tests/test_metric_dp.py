"""DP on reported counts: noise of the configured scale, withheld sums, and the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedaegis.shared.metric_dp import CountMechanism, interval, privatize, ratio_interval
from fedaegis.shared.protocol import check_metrics

METRICS = {"num-examples": 200, "correct": 150, "loss-sum": 80.0,
           "attack.pgd.eps=0.0314.n-count": 100, "attack.pgd.eps=0.0314.robust-correct": 40,
           "attack.pgd.eps=0.0314.linf-sum": 2.0, "suppressed-count": 0}


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_noise_has_the_configured_scale(kind):
    mech = CountMechanism(kind, epsilon=2.0, delta=1e-5)
    rng = np.random.default_rng(0)
    draws = np.array([privatize(METRICS, mech, spent=0, budget=1e9, rng=rng)[0]["correct"] for _ in range(4000)])
    m = 4  # num-examples, correct, n-count, robust-correct
    expected = math.sqrt(2) * m / 2.0 if kind == "laplace" else math.sqrt(m) * math.sqrt(2 * math.log(1.25e5)) / 2.0
    assert mech.noise_std(m) == pytest.approx(expected)
    assert draws.mean() == pytest.approx(150, abs=4 * expected / math.sqrt(len(draws)) + 0.05)
    assert draws.std() == pytest.approx(expected, rel=0.06)


def test_sums_without_known_sensitivity_are_withheld_and_budget_is_charged():
    mech = CountMechanism("laplace", epsilon=1.0)
    rng = np.random.default_rng(1)
    out, spent = privatize(METRICS, mech, spent=0.0, budget=2.5, rng=rng)
    assert out["loss-sum"] == 0.0 and out["attack.pgd.eps=0.0314.linf-sum"] == 0.0
    assert out["suppressed-count"] == 0 and out["dp-withheld-count"] == 0 and spent == 1.0
    assert out["correct"] != 150
    assert check_metrics(out) == []
    out, spent = privatize(METRICS, mech, spent=spent, budget=2.5, rng=rng)
    assert spent == 2.0
    out, spent = privatize(METRICS, mech, spent=spent, budget=2.5, rng=rng)  # 3.0 > 2.5: nothing released
    assert spent == 2.0 and out["dp-withheld-count"] == 1 and out["correct"] == 0 and out["num-examples"] == 0


def test_training_weight_is_kept():
    mech = CountMechanism("gaussian", epsilon=1.0)
    out, _ = privatize({"num-examples": 50, "train-correct": 40}, mech, spent=0, budget=5,
                       rng=np.random.default_rng(2), keep=("num-examples",))
    assert out["num-examples"] == 50 and out["train-correct"] != 40


def test_intervals_cover_the_truth_at_the_nominal_rate():
    mech = CountMechanism("laplace", epsilon=1.0)
    std = mech.noise_std(2)
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(2000):
        correct = 600 + sum(rng.laplace(0, 2.0) for _ in range(5))
        n = 800 + sum(rng.laplace(0, 2.0) for _ in range(5))
        low, high = ratio_interval(correct, n, 5, std)
        hits += low <= 0.75 <= high
    assert 0.93 <= hits / 2000 <= 0.99
    low, high = interval(100.0, 4, 2.0)
    assert high - low == pytest.approx(2 * 1.96 * 2.0 * 2)


def test_bad_mechanism_settings_are_named():
    with pytest.raises(ValueError, match="metric-dp"):
        CountMechanism("exponential", 1.0)
    with pytest.raises(ValueError, match="metric-epsilon"):
        CountMechanism("laplace", 0.0)
