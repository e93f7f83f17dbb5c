"""Attack cells: clean and robust accuracy, success rate and perturbation norms per (attack, epsilon).

A site sends ``attack.<label>.eps=<eps>.<field>`` counts and sums, and the clean pass they share
once as ``attack.clean.*`` (:mod:`fedaegis.shared.results.robustness`, which also says why an
untargeted cell sends no ``successes``); the server sums them and derives the ratios once, from the
totals. Rows: phase ``attack``, the attack's label in the ``attack`` column, its budget in
``epsilon``; under metric DP the robust accuracy's noise interval too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import robustness
from .base import EPS_PATTERN, NAME_PATTERN, Column, Family, Key, KeySet, RoundTotals, eps_name
from .privacy import dp_noise

if TYPE_CHECKING:
    from .base import MetricValue

_CELL = rf"attack\.(?P<attack>{NAME_PATTERN})\.eps=(?P<eps>{EPS_PATTERN})"
_CLEAN = re.escape(robustness.CLEAN)


class Attacks(Family):
    name = "attacks"
    phases = ("attack",)
    qualifier = "attack"
    claims = ("attack.",)
    key_sets = (KeySet("attacks", (
        Key(rf"{_CLEAN}\.n-count", "size", size=".n-count"),
        Key(rf"{_CLEAN}\.clean-correct", "count", size=".n-count"),
        Key(rf"{_CELL}\.n-count", "size", size=".n-count"),
        Key(rf"{_CELL}\.(?:robust-correct|successes)", "count", size=".n-count"),  # successes: targeted only
        Key(rf"{_CELL}\.(?:linf-sum|l2-sum)", "sum", size=".n-count"),
        Key(rf"{_CELL}\.queries", "sum", size=".n-count"),
        # an attack's own counts, e.g. AutoAttack's robust-after-<stage>-count: samples of the set
        Key(rf"{_CELL}\.[a-z0-9\-]+-count", "count", size=".n-count"),
    ), lambda cfg, train: not train and bool(cfg.attack_names),
        lambda cfg: 16 * len(cfg.attack_names) * len(cfg.epsilon_values) + 3,  # + the clean group
        lambda cfg: {"attack": set(cfg.attack_names), "eps": {eps_name(e) for e in cfg.epsilon_values}}),)
    title = "robustness (all sites)"
    columns = (Column("attack", "attack", "text"), Column("eps", "epsilon", "eps"),
               Column("clean", "clean_accuracy"), Column("robust", "robust_accuracy"),
               Column("robust 95% CI", "robust_ci", "text"), Column("success", "success_rate"),
               Column("Linf", "mean_linf", ".4f"), Column("L2", "mean_l2"),
               Column("queries", "mean_queries", ".1f"))

    def phase_rows(self, phase: str, metrics: Mapping[str, float]) -> list[MetricValue]:
        withheld = metrics.get("dp.epsilon-sum", 0) > 0  # the sites' DP withheld the unbounded sums
        return [self.row("attack", name, value, attack, eps)
                for (attack, eps), totals in robustness.decode(metrics).items()
                for name, value in {**totals, **robustness.derive(totals, sums_withheld=withheld)}.items()
                if not (withheld and self.dp_withheld(f"attack.{attack}.eps={eps_name(eps)}.{name}"))]

    def cells(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Cells with ``robust_ci``, the DP noise's 95% interval of the robust accuracy, as text."""
        cells = super().cells(rows)
        for cell in cells:
            low, high = cell.get("robust_accuracy_ci_low"), cell.get("robust_accuracy_ci_high")
            if low is not None and high is not None:
                cell["robust_ci"] = f"{low:.2f}-{high:.2f}"
        return cells

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        rows = super().rows(totals)
        noise = dp_noise(totals)
        if noise and totals.evaluate is not None:
            for (attack, eps), cell in robustness.decode(totals.evaluate).items():
                ci = noise.interval(cell.get("robust-correct", 0), cell.get("n-count", 0))
                if ci:
                    rows += [self.row("attack", "robust-accuracy-ci-low", ci[0], attack, eps),
                             self.row("attack", "robust-accuracy-ci-high", ci[1], attack, eps)]
        return rows


FAMILY = Attacks()
