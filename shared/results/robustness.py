"""Robustness counts on the wire and in the database: one naming scheme for both sides.

A site sends ``attack.<label>.eps=<eps>.<field>`` scalars (counts and sums only);
the server sums them over sites and derives the ratios (robust accuracy, success
rate, mean perturbation norms) once, from the totals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .eps import eps_name

PREFIX = "attack"

# field of evaluate_attacks' counts -> wire name (each passes protocol.is_aggregate_name)
WIRE_FIELDS = {
    "n": "n-count",
    "clean_correct": "clean-correct",
    "robust_correct": "robust-correct",
    "successes": "successes",
    "linf_sum": "linf-sum",
    "l2_sum": "l2-sum",
    "queries": "queries",
}
_NAME = re.compile(rf"^{PREFIX}\.(?P<label>[a-z0-9_\-+]+)\.eps=(?P<eps>[0-9.e+\-]+)\.(?P<field>[a-z0-9_\-]+)$")


def _wire_field(field: str) -> str:
    return WIRE_FIELDS.get(field, field.replace("_", "-") + ("" if field.endswith("count") else "-count"))


def encode(results: Mapping[tuple[str, float], Mapping[str, int | float]]) -> dict[str, int | float]:
    """``evaluate_attacks`` output -> flat scalar metrics for a Flower MetricRecord."""
    return {
        f"{PREFIX}.{label}.eps={eps_name(eps)}.{_wire_field(field)}": value
        for (label, eps), counts in results.items()
        for field, value in counts.items()
    }


def decode(metrics: Mapping[str, float]) -> dict[tuple[str, float], dict[str, float]]:
    """Flat metrics (possibly summed over sites) -> {(attack, eps): {wire field: total}}."""
    out: dict[tuple[str, float], dict[str, float]] = {}
    for name, value in metrics.items():
        m = _NAME.match(name)
        if m:
            out.setdefault((m["label"], float(m["eps"])), {})[m["field"]] = float(value)
    return out


def _unit(ratio: float) -> float:
    return min(1.0, max(0.0, ratio))


def derive(totals: Mapping[str, float], *, sums_withheld: bool = False) -> dict[str, float]:
    """Ratios from one (attack, eps) cell's totals; a ratio with a zero denominator is left out.

    ``sums_withheld``: the sites released under metric DP, which withholds sums without a
    per-sample bound (norms, queries) as 0; their means are then left out, never shown as 0.
    """
    n, clean, robust = totals.get("n-count", 0), totals.get("clean-correct", 0), totals.get("robust-correct", 0)
    succ = totals.get("successes", 0)
    out: dict[str, float] = {}
    if n:  # noisy counts (metric DP) can leave [0, n]: a ratio is clamped to [0, 1] (post-processing)
        out["clean-accuracy"] = _unit(clean / n)
        out["robust-accuracy"] = _unit(robust / n)
        if "queries" in totals and not sums_withheld:
            out["mean-queries"] = totals["queries"] / n
    if clean > 0:
        out["success-rate"] = _unit(succ / clean)
    if succ and not sums_withheld:
        out["mean-linf"] = totals.get("linf-sum", 0) / succ
        out["mean-l2"] = totals.get("l2-sum", 0) / succ
    return out
