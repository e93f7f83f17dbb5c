"""Privacy accounting: the epsilon the sites' DP-SGD and metric DP spent, and the noise they declared.

Each site decides its own DP (its policy) and declares what it applied: the epsilon of the release
and the noise std of a sensitivity-1 count. The server stores the worst site's figures; intervals of
the accuracies (stored by their own families through :func:`dp_noise`) cover the DP noise only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Family, Key, KeySet, RoundTotals

if TYPE_CHECKING:
    from .base import MetricValue

# what a site that applied metric DP declares in its reply (shared/reply/metric_dp.py writes them)
WITHHELD = "dp-withheld-count"
EPSILON_KEY = "dp.epsilon-sum"
STD_KEY = "dp.noise-std-sum"


def ratio_interval(num: float, den: float, sites: int, std: float, z: float = 1.96) -> tuple[float, float] | None:
    """Interval of num/den when the numerator carries independent noise of ``std`` per site.

    Denominators are the sites' fixed set sizes (public, not noised).
    """
    if den <= 0:
        return None
    r = num / den
    half = z * std * math.sqrt(max(sites, 0)) / den
    return max(0.0, r - half), min(1.0, r + half)


@dataclass(frozen=True)
class DpNoise:
    sites: int  # sites that replied
    std: float  # the largest declared noise std of a sensitivity-1 count

    def interval(self, num: float, den: float) -> tuple[float, float] | None:
        return ratio_interval(num, den, self.sites, self.std)


def dp_noise(totals: RoundTotals) -> DpNoise | None:
    """The round's metric-DP noise, or None when no site noised its evaluation."""
    noised = [v for v in totals.site_evaluate.values() if EPSILON_KEY in v]
    if totals.evaluate is None or not noised:
        return None
    return DpNoise(len(totals.site_evaluate), max(float(v.get(STD_KEY, 0.0)) for v in noised))


class Privacy(Family):
    name = "privacy"
    phases = ("privacy",)
    key_sets = (KeySet("dp-sgd", (Key(r"dpsgd\.epsilon-sum", "meta"),),
                       lambda cfg, train: train and cfg.dp_epsilon > 0, lambda cfg: 1),)

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        rows = []
        train = totals.train or {}
        if "dpsgd.epsilon-sum" in train and totals.train_replies:
            rows.append(self.row("privacy", "dp-sgd-epsilon", train["dpsgd.epsilon-sum"] / totals.train_replies))
        noise = dp_noise(totals)
        if noise:
            sites = totals.site_evaluate.values()
            rows += [
                self.row("privacy", "epsilon-spent", max(float(v[EPSILON_KEY]) for v in sites if EPSILON_KEY in v)),
                self.row("privacy", "noise-std", noise.std),
                self.row("privacy", "withheld-sites", sum(v.get(WITHHELD, 0) for v in sites)),
            ]
        return rows


FAMILY = Privacy()
