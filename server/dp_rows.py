"""What the server can say about DP-noised counts: budget spent and confidence intervals."""

from __future__ import annotations

from collections.abc import Mapping

from ..shared import robustness
from ..shared.config import RunConfig
from ..shared.metric_dp import CountMechanism, is_dp_count, ratio_interval
from ..shared.store import MetricValue


def dp_rows(
    cfg: RunConfig, totals: Mapping[str, float], sites: Mapping[str, Mapping[str, float]]
) -> list[MetricValue]:
    """Privacy rows (epsilon spent, noise std) and 95% intervals of accuracy and robust accuracy.

    The intervals cover the DP noise only (each of ``len(sites)`` sites adds noise of
    the same, public scale to every count); sampling error comes on top.
    """
    if cfg.metric_dp == "none" or not sites:
        return []
    mech = CountMechanism(cfg.metric_dp, cfg.metric_epsilon, cfg.metric_delta)
    one_site = next(iter(sites.values()))
    std = mech.noise_std(sum(1 for k in one_site if is_dp_count(k)))
    spent = [v.get("dp.epsilon-sum", 0.0) for v in sites.values()]
    rows = [
        MetricValue("privacy", "epsilon-spent", max(spent)),
        MetricValue("privacy", "epsilon-budget", cfg.metric_epsilon_budget),
        MetricValue("privacy", "noise-std", std),
        MetricValue("privacy", "withheld-sites", sum(v.get("dp-withheld-count", 0) for v in sites.values())),
    ]
    n = len(sites)
    ci = ratio_interval(totals.get("correct", 0), totals.get("num-examples", 0), n, std)
    if ci:
        rows += [MetricValue("evaluate", "accuracy-ci-low", ci[0]), MetricValue("evaluate", "accuracy-ci-high", ci[1])]
    for (attack, eps), cell in robustness.decode(totals).items():
        ci = ratio_interval(cell.get("robust-correct", 0), cell.get("n-count", 0), n, std)
        if ci:
            rows += [
                MetricValue("attack", "robust-accuracy-ci-low", ci[0], attack=attack, epsilon=eps),
                MetricValue("attack", "robust-accuracy-ci-high", ci[1], attack=attack, epsilon=eps),
            ]
    return rows
