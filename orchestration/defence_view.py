"""``fedaegis show``'s view of a defence comparison: the hardening table, defended systems, detection."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

DEFENCE_PHASES = ("hardening", "defence-transfer", "defence-adaptive")
THREATS = {"hardening": "white-box", "defence-transfer": "transfer", "defence-adaptive": "adaptive"}


def defence_cells(rnd: dict[str, Any]) -> list[dict[str, Any]]:
    """Federation-wide rows of one round, one entry per (phase, system, epsilon)."""
    cells: dict[tuple[str, str, float], dict[str, Any]] = {}
    for row in rnd["metric_rows"]:
        if row["phase"] in DEFENCE_PHASES:
            key = (row["phase"], row["attack"], row["epsilon"])
            cell = cells.setdefault(key, {"phase": row["phase"], "threat": THREATS[row["phase"]],
                                          "system": row["attack"], "epsilon": row["epsilon"]})
            cell[row["name"].replace("-", "_")] = row["value"]
    order = {p: i for i, p in enumerate(DEFENCE_PHASES)}
    return [cells[k] for k in sorted(cells, key=lambda k: (order[k[0]], k[1], k[2] or 0.0))]


def detection_cells(rnd: dict[str, Any]) -> list[dict[str, Any]]:
    """Federated detector ROC AUC of one round, one entry per (detector, epsilon)."""
    cells: dict[tuple[str, float], dict[str, Any]] = {}
    for row in rnd["metric_rows"]:
        if row["phase"] == "detection":
            cell = cells.setdefault((row["attack"], row["epsilon"]),
                                    {"detector": row["attack"], "epsilon": row["epsilon"]})
            cell[row["name"].replace("-", "_")] = row["value"]
    return [cells[k] for k in sorted(cells)]


def _eps(eps: float | None) -> str:
    return "-" if eps is None else f"{eps * 255:.3g}/255"


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_defences(run: dict[str, Any], out: Console) -> None:
    """The hardening/defence and detection tables of every round (nothing if the run has none)."""
    rows = [(r["number"], c) for r in run["rounds"] for c in defence_cells(r)]
    if rows:
        table = Table(title="hardening and defences (all sites, PGD-10)")
        for col in ("round", "threat", "system", "eps", "clean", "robust", "routed clean", "routed adv", "n"):
            table.add_column(col, justify="left" if col in ("threat", "system") else "right")
        for number, c in rows:
            table.add_row(str(number), c["threat"], c["system"], _eps(c["epsilon"]), _fmt(c.get("clean_accuracy")),
                          _fmt(c.get("robust_accuracy")), _fmt(c.get("clean_routed_fraction")),
                          _fmt(c.get("adv_routed_fraction")), _fmt(c.get("n_count"), ".0f"))
        out.print(table)
    det = [(r["number"], c) for r in run["rounds"] for c in detection_cells(r)]
    if det:
        table = Table(title="adversarial-example detection (federated ROC AUC, PGD-10 on the standard model)")
        for col in ("round", "detector", "eps", "ROC AUC", "clean", "adversarial"):
            table.add_column(col, justify="left" if col == "detector" else "right")
        for number, c in det:
            table.add_row(str(number), c["detector"], _eps(c["epsilon"]), _fmt(c.get("roc_auc")),
                          _fmt(c.get("clean_count"), ".0f"), _fmt(c.get("adv_count"), ".0f"))
        out.print(table)
