"""Robustness counts on the wire and in the database: one naming scheme for both sides.

A site sends ``attack.<label>.eps=<eps>.<field>`` scalars (counts and sums only);
the server sums them over sites and derives the ratios (robust accuracy, success
rate, mean perturbation norms) once, from the totals.

Each fact leaves once, so that metric DP (which splits a reply's epsilon over its noised
counts) spends nothing on what the server can derive:

- every cell of one ``evaluate_attacks`` call is scored on the same images with the same
  clean forward pass, so the clean count goes once, as ``attack.clean.clean-correct`` (sized
  by ``attack.clean.n-count``), not once per cell;
- an untargeted attack's ``successes`` are exactly ``clean-correct - robust-correct`` (a
  correct sample either stays correct or is fooled), so only a targeted attack's are sent.

Both rules are structural (one call, the attack's threat model), never read from values;
:func:`decode` puts the derived counts back in every cell, so the store's rows and every
reader of them see ``clean-correct`` and ``successes`` per cell as before.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from .base import unit_ratio
from .eps import eps_name

PREFIX = "attack"
CLEAN = f"{PREFIX}.clean"  # the group of the clean pass every cell of a reply shares

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


def encode(results: Mapping[tuple[str, float], Mapping[str, int | float]], *,
           targeted: Collection[str]) -> dict[str, int | float]:
    """One ``evaluate_attacks`` call's output -> flat scalar metrics for a Flower MetricRecord.

    ``targeted``: the labels of the suite's targeted attacks
    (:func:`fedaegis.shared.attacks.targeted_labels`), the only ones whose ``successes`` are
    sent. The clean pass goes once under :data:`CLEAN`; each cell keeps its ``n-count`` (a
    public size, never noised) as its group's size for cell suppression and clamping.
    """
    out: dict[str, int | float] = {}
    clean = {(c["n"], c["clean_correct"]) for c in results.values()}
    if len(clean) > 1:  # not one clean pass over one set: evaluate_attacks' contract broken
        raise ValueError(f"results: cells of one call differ in (n, clean_correct): {sorted(clean)}")
    if clean:
        ((out[f"{CLEAN}.n-count"], out[f"{CLEAN}.clean-correct"]),) = clean
    for (label, eps), counts in results.items():
        for field, value in counts.items():
            if field == "clean_correct" or (field == "successes" and label not in targeted):
                continue
            out[f"{PREFIX}.{label}.eps={eps_name(eps)}.{_wire_field(field)}"] = value
    return out


def decode(metrics: Mapping[str, float]) -> dict[tuple[str, float], dict[str, float]]:
    """Flat metrics (possibly summed over sites) -> {(attack, eps): {wire field: total}}.

    Every cell gets the shared ``clean-correct``, and an untargeted cell (no ``successes``
    sent) its ``successes = clean-correct - robust-correct`` (at least 0: under metric DP the
    two are noised apart).
    """
    out: dict[tuple[str, float], dict[str, float]] = {}
    for name, value in metrics.items():
        m = _NAME.match(name)
        if m:
            out.setdefault((m["label"], float(m["eps"])), {})[m["field"]] = float(value)
    clean = float(metrics.get(f"{CLEAN}.clean-correct", 0))
    for cell in out.values():
        cell["clean-correct"] = clean
        if "successes" not in cell:
            cell["successes"] = max(0.0, clean - cell.get("robust-correct", 0.0))
    return out


def derive(totals: Mapping[str, float], *, sums_withheld: bool = False) -> dict[str, float]:
    """Ratios from one (attack, eps) cell's totals; a ratio with a zero denominator is left out.

    ``sums_withheld``: the sites released under metric DP, which withholds sums without a
    per-sample bound (norms, queries) as 0; their means are then left out, never shown as 0.
    """
    n, clean, robust = totals.get("n-count", 0), totals.get("clean-correct", 0), totals.get("robust-correct", 0)
    succ = totals.get("successes", 0)
    out: dict[str, float] = {}
    if n:  # noisy counts (metric DP) can leave [0, n]: a ratio is clamped to [0, 1] (post-processing),
        # and robust accuracy to the clean one: an attack only ever turns correct answers wrong
        out["clean-accuracy"] = unit_ratio(clean / n)
        out["robust-accuracy"] = min(unit_ratio(robust / n), out["clean-accuracy"])
        if "queries" in totals and not sums_withheld:
            out["mean-queries"] = totals["queries"] / n
    if clean > 0:
        out["success-rate"] = unit_ratio(succ / clean)
    if succ and not sums_withheld:
        out["mean-linf"] = totals.get("linf-sum", 0) / succ
        out["mean-l2"] = totals.get("l2-sum", 0) / succ
    return out
