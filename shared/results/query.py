"""The one query layer of ``show`` and ``report``: a stored run's rows, read as each family's cells.

Both read a run as :meth:`fedaegis.shared.store.RunStore.get_run` returns it and ask here for a
family's cells (grouped by the family itself, :meth:`~.base.Family.cells`) and their formatted
columns, so a family is grouped and formatted in one place for every view.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from . import BY_NAME, FAMILIES, family_of
from .base import Column, Family, eps_display


def _family(row: Mapping[str, Any]) -> str:
    return row.get("family") or family_of(row["phase"])


def rows(rnd: Mapping[str, Any], family: str) -> list[Mapping[str, Any]]:
    """The federation-wide rows of ``family`` in one round."""
    return [r for r in rnd.get("metric_rows", []) if _family(r) == family]


def site_rows(rnd: Mapping[str, Any], family: str) -> list[tuple[str, Mapping[str, Any]]]:
    """Each site's rows of ``family`` in one round, as (node id, row)."""
    return [(node, r) for node, rs in rnd.get("sites", {}).items() for r in rs if _family(r) == family]


def cells(rnd: Mapping[str, Any], family: str) -> list[dict[str, Any]]:
    """``family``'s federation-wide cells of one round."""
    return BY_NAME[family].cells(rows(rnd, family))


def run_cells(run: Mapping[str, Any], *families: str) -> list[tuple[int, dict[str, Any]]]:
    """(round, cell) of every round, for one or more families (their cells in that order per round)."""
    return [(r["number"], c) for r in run["rounds"] for f in families for c in cells(r, f)]


def refusals(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Requests the sites' policies refused: round, site, request (train/evaluate) and policy field."""
    return [{"round": r["number"], "site": str(node), "request": row["attack"], "field": row["name"]}
            for r in run["rounds"] for node, row in site_rows(r, "refusals")]


def present(runs: Iterable[Mapping[str, Any]]) -> list[Family]:
    """The families with at least one federation-wide row in these runs, in registry order."""
    found = {_family(r) for run in runs for rnd in run["rounds"] for r in rnd.get("metric_rows", [])}
    found |= {"refusals"} if any(refusals(run) for run in runs) else set()
    return [f for f in FAMILIES if f.name in found]


def number(value: Any) -> float | None:
    """A finite float, or None (missing, NaN or infinite: not available)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def formatted(cell: Mapping[str, Any], column: Column, missing: str = "-") -> str:
    """One cell's value in ``column`` as text (``missing`` where it has none)."""
    value = cell.get(column.field)
    if column.spec == "text":
        return missing if value in (None, "") else str(value)
    if column.spec == "eps":
        return eps_display(number(value), missing)
    v = number(value)
    return missing if v is None else format(v, column.spec)


def table(family: Family, cells_: Iterable[Mapping[str, Any]], missing: str = "-") -> list[list[str]]:
    """Rows of text in ``family.columns`` order."""
    return [[formatted(c, col, missing) for col in family.columns] for c in cells_]
