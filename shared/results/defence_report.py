"""A defence comparison on the wire: counts per (table, system, epsilon), summed by the server.

A site evaluates every member of the global :class:`~fedaegis.shared.models.members.MemberSet`
and the defended systems built from them, and sends only counts::

    defence.<table>.<system>.n-count                    samples the system was scored on
    defence.<table>.<system>.clean-correct              correct on the clean inputs
    defence.<table>.<system>.routed-count               clean inputs a router sent to its hardened model
    defence.<table>.<system>.eps=<eps>.n-count
    defence.<table>.<system>.eps=<eps>.robust-correct   correct on the clean and on the attacked input
    defence.<table>.<system>.eps=<eps>.routed-count     attacked inputs a router sent to its hardened model

Tables: ``hardening`` (each member under white-box PGD-10 on itself), ``transfer``
(PGD-10 crafted on the standard member, the attacker unaware of the defence) and
``adaptive`` (PGD-10 through the whole defended system: detector, gate and models,
or all members of the ensemble). Each (system, eps) is a group with its own
``n-count``, so cell suppression treats it as one cell. The server derives the
accuracies once, from the sums (:func:`decode`, :func:`derive`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .base import unit_ratio
from .eps import eps_name

PREFIX = "defence"
# wire table -> database phase
PHASES = {"hardening": "hardening", "transfer": "defence-transfer", "adaptive": "defence-adaptive"}
_NAME = re.compile(rf"^{PREFIX}\.(?P<table>[a-z]+)\.(?P<system>[a-z0-9_\-+]+)\."
                   r"(?:eps=(?P<eps>[0-9.e+\-]+)\.)?(?P<field>[a-z\-]+)$")


def _eps(eps: float) -> str:
    return f"eps={eps_name(eps)}"


def encode_table(
    table: str, counts: Mapping[str, int], systems: Iterable[str], epsilons: Sequence[float]
) -> dict[str, int]:
    """``evaluate_hardening`` counts (``hardening.<system>...``, ``num-examples``) -> wire metrics."""
    if table not in PHASES:
        raise ValueError(f"table: must be one of {sorted(PHASES)}, got {table!r}")
    n = int(counts["num-examples"])
    out: dict[str, int] = {}
    for system in systems:
        group = f"{PREFIX}.{table}.{system}"
        out[f"{group}.n-count"] = n
        out[f"{group}.clean-correct"] = int(counts[f"hardening.{system}.clean-correct"])
        for eps in epsilons:
            out[f"{group}.{_eps(eps)}.n-count"] = n
            out[f"{group}.{_eps(eps)}.robust-correct"] = int(counts[f"hardening.{system}.{_eps(eps)}.robust-correct"])
    return out


def decode(metrics: Mapping[str, float]) -> dict[tuple[str, str, float | None], dict[str, float]]:
    """Wire metrics (one site's or summed) -> {(table, system, eps or None): {field: total}}."""
    cells: dict[tuple[str, str, float | None], dict[str, float]] = {}
    for name, value in metrics.items():
        m = _NAME.match(name)
        if m and m["table"] in PHASES:
            key = (m["table"], m["system"], float(m["eps"]) if m["eps"] is not None else None)
            cells.setdefault(key, {})[m["field"]] = float(value)
    return cells


def derive(metrics: Mapping[str, float]) -> list[dict[str, object]]:
    """One entry per (table, system, eps) with the accuracies; ratios over zero samples are left out.

    ``clean-accuracy`` is the system's (the same for every eps), ``robust-accuracy``
    that eps's; routers add the fraction of clean and of attacked inputs routed.
    """
    cells = decode(metrics)
    rows = []
    for (table, system, eps), totals in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        if eps is None:
            continue
        base = cells.get((table, system, None), {})
        values: dict[str, float] = {"n-count": totals.get("n-count", 0.0)}
        # noised counts (metric DP) are clamped as in robustness.derive: ratios in [0, 1], robust <= clean
        if base.get("n-count"):
            values["clean-accuracy"] = unit_ratio(base.get("clean-correct", 0.0) / base["n-count"])
            if "routed-count" in base:
                values["clean-routed-fraction"] = unit_ratio(base["routed-count"] / base["n-count"])
        if totals.get("n-count"):
            robust = unit_ratio(totals.get("robust-correct", 0.0) / totals["n-count"])
            values["robust-accuracy"] = min(robust, values.get("clean-accuracy", 1.0))
            if "routed-count" in totals:
                values["adv-routed-fraction"] = unit_ratio(totals["routed-count"] / totals["n-count"])
        rows.append({"phase": PHASES[table], "system": system, "epsilon": eps, "values": values})
    return rows
