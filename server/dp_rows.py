"""What the server can say about DP-noised counts: budget spent and confidence intervals."""

from __future__ import annotations

from collections.abc import Mapping

from ..shared import robustness
from ..shared.config import RunConfig
from ..shared.metric_dp import EPSILON_KEY, STD_KEY, WITHHELD, ratio_interval
from ..shared.store import MetricValue


def dp_rows(
    cfg: RunConfig, totals: Mapping[str, float], sites: Mapping[str, Mapping[str, float]]
) -> list[MetricValue]:
    """Privacy rows (epsilon of this release, noise std) and 95% intervals of accuracy and robust accuracy.

    Each site decides its own DP (its policy) and declares what it applied: the epsilon of
    the release and the noise std of a sensitivity-1 count. The intervals cover the DP
    noise only (the largest declared std, for every site); sampling error comes on top.
    """
    noised = [v for v in sites.values() if EPSILON_KEY in v]
    if not noised:
        return []
    std = max(float(v.get(STD_KEY, 0.0)) for v in noised)
    rows = [
        MetricValue("privacy", "epsilon-spent", max(float(v[EPSILON_KEY]) for v in noised)),
        MetricValue("privacy", "noise-std", std),
        MetricValue("privacy", "withheld-sites", sum(v.get(WITHHELD, 0) for v in sites.values())),
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
