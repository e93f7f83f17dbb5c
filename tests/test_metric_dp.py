"""DP on released values: OpenDP's mechanisms at the declared sensitivities, withheld sums, accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.reply.metric_dp import (
    CountMechanism,
    interval,
    noised_keys,
    privatize,
    ratio_interval,
    withhold,
)
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.reply.schema import FILES_PER_PATIENT, check, declaration

CFG = RunConfig(attacks="pgd", epsilons="8/255")
EPS = f"{8 / 255:.6g}"
METRICS = {"num-examples": 200, "correct": 150, "loss-sum": 80.0, "skipped": 0,
           f"attack.pgd.eps={EPS}.n-count": 100, f"attack.pgd.eps={EPS}.robust-correct": 40,
           f"attack.pgd.eps={EPS}.linf-sum": 2.0, "suppressed-count": 0}


def test_sensitivities_are_declared_once_next_to_their_keys():
    assert declaration("correct", CFG, False).sensitivity == 1
    assert declaration("skipped", CFG, False).sensitivity == FILES_PER_PATIENT  # files, not patients
    det = RunConfig(defence_models="none,pgd-at", detector="mahalanobis", epsilons="8/255")
    key = declaration(f"detector.mahalanobis.eps={EPS}.clean-bin007-count", det, False)
    assert key.kind == "count" and key.sensitivity == 2  # a patient gives a clean and an attacked input
    assert declaration("num-examples", CFG, False).kind == "size"
    auto = RunConfig(attacks="autoattack", epsilons="8/255")
    assert declaration(f"attack.autoattack.eps={EPS}.robust-after-apgd-ce-count", auto, False).kind == "count"
    assert declaration(f"attack.pgd.eps={EPS}.n-count", auto, False) is None  # an attack the request did not name
    assert declaration("attack.autoattack.eps=0.5.n-count", auto, False) is None  # nor an epsilon it did not ask
    assert declaration("loss-sum", CFG, False).bound is None  # unbounded: withheld under DP
    assert noised_keys(METRICS, CFG, False) == {"correct": (1.0, True), "skipped": (4.0, True),
                                                f"attack.pgd.eps={EPS}.robust-correct": (1.0, True)}


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_opendp_accounting_matches_the_requested_epsilon(kind):
    mech = CountMechanism(kind, epsilon=1.0, delta=1e-6)
    eps, delta = mech.loss(list(noised_keys(METRICS, CFG, False).values()))
    assert eps == pytest.approx(1.0, rel=1e-6) and delta == (0.0 if kind == "laplace" else 1e-6)


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_noise_is_integer_with_the_declared_scale(kind):
    mech = CountMechanism(kind, epsilon=2.0, delta=1e-6)
    draws = np.array([privatize(METRICS, mech, cfg=CFG, is_train=False)[0]["correct"] for _ in range(3000)])
    assert draws.dtype.kind == "i"  # discrete: no floating-point artefacts reveal the count
    expected = mech.noise_std(3)  # correct, skipped, robust-correct share the release
    assert draws.mean() == pytest.approx(150, abs=5 * expected / math.sqrt(len(draws)))
    # OpenDP's noise is unseeded: the sample std of 3,000 Laplace draws varies by 2% (kurtosis 6), so 10% is
    # 5 of those (a wrong scale, e.g. noise split over 2 counts instead of 3, is off by 33%)
    assert draws.std() == pytest.approx(expected, rel=0.10)


def test_sums_without_a_bound_are_withheld_counts_clamped():
    out, (eps, _) = privatize(METRICS, CountMechanism("laplace", 1.0), cfg=CFG, is_train=False)
    assert out["loss-sum"] == 0.0 and out[f"attack.pgd.eps={EPS}.linf-sum"] == 0.0
    assert out["num-examples"] == 200 and out[f"attack.pgd.eps={EPS}.n-count"] == 100  # sizes: public
    assert 0 <= out[f"attack.pgd.eps={EPS}.robust-correct"] <= 100 and 0 <= out["skipped"] <= 200
    assert eps == pytest.approx(1.0) and check_metrics(out) == [] and check(out, CFG, False) == []
    gone = withhold(METRICS, CFG, False)
    assert gone["correct"] == 0 and gone["num-examples"] == 200 and gone["dp-withheld-count"] == 1


def test_training_weight_is_kept():
    out, _ = privatize({"num-examples": 50, "train-correct": 40}, CountMechanism("gaussian", 1.0), cfg=CFG,
                       is_train=True, keep=("num-examples",))
    assert out["num-examples"] == 50 and set(out) == {"num-examples", "train-correct", "dp.noise-std-sum"}


def test_intervals_cover_the_truth_at_the_nominal_rate():
    mech = CountMechanism("laplace", epsilon=1.0)
    std = mech.noise_std(2)
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(1000):
        low, high = ratio_interval(600 + rng.laplace(0, 2.0, size=5).sum(), 800, 5, std)
        hits += low <= 0.75 <= high
    assert 0.93 <= hits / 1000 <= 0.995
    low, high = interval(100.0, 4, 2.0)
    assert high - low == pytest.approx(2 * 1.96 * 2.0 * 2)


def test_bad_mechanism_settings_are_named():
    with pytest.raises(ValueError, match="metric-dp"):
        CountMechanism("exponential", 1.0)
    with pytest.raises(ValueError, match="metric-epsilon"):
        CountMechanism("laplace", 0.0)


def test_the_main_jobs_attack_reply_noises_each_fact_once(shared_data, monkeypatch, tmp_path):
    """The main job's final evaluation (FGSM and PGD-10 at 4 epsilons: 8 untargeted cells) at a real site
    under the default policy: the clean count once and each cell's robust count, 11 noised counts where
    26 were (clean-correct, robust-correct and successes per cell), so each gets epsilon/11, not /26."""
    import inspect

    from fedaegis.client.app import app
    from fedaegis.orchestration.cli import simulate
    from fedaegis.tests.site_messages import ask

    monkeypatch.delenv("FEDAEGIS_SITE_POLICY", raising=False)  # the built-in site policy, as in the main job
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))  # its ledger in a fresh folder
    attacks = inspect.signature(simulate).parameters["attacks"].default  # what `fedaegis simulate` runs
    cfg = RunConfig(attacks=attacks)
    assert len(cfg.attack_names) * len(cfg.epsilon_values) == 8
    reply = ask(app, "evaluate", {"attacks": attacks}, {"data-path": str(shared_data / "pneumoniamnist" /
                                                                          "pneumoniamnist.npz")},
                server_round=cfg.num_server_rounds)  # attacks run in the final round
    metrics = dict(reply.content["metrics"])
    noised = noised_keys(metrics, cfg, False)
    assert len(noised) == 11
    assert not [k for k in metrics if k.endswith(".successes")]  # untargeted: clean - robust, derived by the server
    assert [k for k in noised if k.endswith("clean-correct")] == ["attack.clean.clean-correct"]
    assert metrics["dp.epsilon-sum"] == pytest.approx(1.0)
    assert metrics["dp.noise-std-sum"] == pytest.approx(CountMechanism("laplace", 1.0).noise_std(11))
