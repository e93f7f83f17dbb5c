"""Differential privacy for the counts a site reports, with a per-site budget.

Only sample counts are released under DP (``num-examples``, ``n-count``, ``skipped``,
``correct``, ``*-correct``, ``successes``): adding or removing one patient moves
each by at most 1, so their sensitivity is known. Sums without a bound known to
the protocol (loss, perturbation norms, queries) are withheld (zeroed) when DP is
on. Every release spends ``epsilon`` from the site's budget (basic composition);
once the budget is spent the site releases nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MECHANISMS = ("none", "laplace", "gaussian")
_COUNT_LEAVES = {"num-examples", "n-count", "correct", "successes", "skipped"}
# Bookkeeping keys that are not data: released as they are.
_PUBLIC_LEAVES = {"suppressed-count", "dp-withheld-count"}
WITHHELD = "dp-withheld-count"


def is_dp_count(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf in _COUNT_LEAVES or leaf.endswith("-correct")


@dataclass(frozen=True)
class CountMechanism:
    """Noise for one release of ``m`` counts at privacy cost ``epsilon`` (and ``delta``)."""

    kind: str
    epsilon: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.kind not in MECHANISMS:
            raise ValueError(f"metric-dp: must be one of {MECHANISMS}, got {self.kind!r}")
        if self.kind != "none" and not self.epsilon > 0:
            raise ValueError(f"metric-epsilon: must be > 0, got {self.epsilon}")
        if self.kind == "gaussian" and not 0 < self.delta < 1:
            raise ValueError(f"metric-delta: must be in (0, 1), got {self.delta}")

    def noise_std(self, m: int) -> float:
        """Standard deviation of the noise on each of ``m`` jointly released counts."""
        if self.kind == "none" or m == 0:
            return 0.0
        if self.kind == "laplace":  # L1 sensitivity m, scale b = m / eps, std = sqrt(2) b
            return math.sqrt(2.0) * m / self.epsilon
        # Gaussian mechanism (Dwork & Roth, Thm A.1): L2 sensitivity sqrt(m)
        return math.sqrt(m) * math.sqrt(2.0 * math.log(1.25 / self.delta)) / self.epsilon

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "laplace":
            return rng.laplace(0.0, m / self.epsilon, size=m)
        if self.kind == "gaussian":
            return rng.normal(0.0, self.noise_std(m), size=m)
        return np.zeros(m)


def privatize(
    metrics: Mapping[str, int | float],
    mechanism: CountMechanism,
    *,
    spent: float,
    budget: float,
    rng: np.random.Generator,
    keep: tuple[str, ...] = (),
) -> tuple[dict[str, int | float], float]:
    """Noise the counts, withhold other sums; return the release and the new budget spent.

    ``keep`` values pass unchanged and uncharged (a training reply's FedAvg weight,
    which the federation needs and the site knowingly shares).
    """
    if mechanism.kind == "none":
        return dict(metrics), spent
    out: dict[str, int | float] = {}
    exhausted = spent + mechanism.epsilon > budget + 1e-12
    counts = [k for k in metrics if is_dp_count(k) and k not in keep]
    noise = dict(zip(counts, mechanism.sample(len(counts), rng)))
    for name, value in metrics.items():
        leaf = name.rsplit(".", 1)[-1]
        if name in keep or leaf in _PUBLIC_LEAVES:
            out[name] = value
        elif exhausted or name not in noise:
            out[name] = 0 if isinstance(value, int) else 0.0
        else:
            out[name] = float(value) + float(noise[name])
    out[WITHHELD] = int(exhausted)
    return out, spent if exhausted else spent + mechanism.epsilon


def interval(total: float, sites: int, std: float, z: float = 1.96) -> tuple[float, float]:
    """Noise-only confidence interval of a count summed over ``sites`` noisy releases."""
    half = z * std * math.sqrt(max(sites, 0))
    return total - half, total + half


def ratio_interval(num: float, den: float, sites: int, std: float, z: float = 1.96) -> tuple[float, float] | None:
    """Delta-method interval of num/den when both carry independent noise of ``std`` per site."""
    if den <= 0:
        return None
    r = num / den
    var = sites * std**2 * (1 + r**2) / den**2
    half = z * math.sqrt(var)
    return max(0.0, r - half), min(1.0, r + half)
