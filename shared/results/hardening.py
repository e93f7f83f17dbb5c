"""The hardening table: each member of a defence comparison under white-box PGD-10 on itself.

Sites train every member (``member.<name>.train-*``) and send ``defence.hardening.<system>...``
counts (:mod:`fedaegis.shared.results.defence_report`); rows phase ``hardening``, the member (``none``: the
standard model) in the ``attack`` column, ``clean-accuracy``/``robust-accuracy``/``n-count`` per eps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .base import EPS_PATTERN, NAME_PATTERN, Column, Family, Key, KeySet, RoundTotals, eps_name, snake

if TYPE_CHECKING:
    from .base import MetricValue

THREATS = {"hardening": "white-box", "defence-transfer": "transfer", "defence-adaptive": "adaptive"}
PHASE_ORDER = tuple(THREATS)
# the table ``show`` prints for the hardening table and the defended systems alike
DEFENCE_COLUMNS = (Column("threat", "threat", "text"), Column("system", "system", "text"),
                   Column("eps", "epsilon", "eps"), Column("clean", "clean_accuracy"),
                   Column("robust", "robust_accuracy"), Column("routed clean", "clean_routed_fraction"),
                   Column("routed adv", "adv_routed_fraction"), Column("n", "n_count", ".0f"))


def table_keys(tables: str) -> tuple[Key, ...]:
    """The wire keys of the defence tables ``tables`` (a regex alternative)."""
    group = rf"defence\.(?:{tables})\.(?P<system>{NAME_PATTERN})(?:\.eps=(?P<eps>{EPS_PATTERN}))?"
    return (Key(rf"{group}\.n-count", "size", size=".n-count"),
            Key(rf"{group}\.(?:clean|robust)-correct", "count", size=".n-count"))


def table_params(cfg) -> dict[str, set[str]]:
    return {"system": set(cfg.defence_model_names) | {"routed", "ensemble"},
            "eps": {eps_name(e) for e in cfg.epsilon_values}}


def table_max_keys(cfg) -> int:
    """Keys of one defence table."""
    return 4 * (len(cfg.defence_model_names) + 2) * (len(cfg.epsilon_values) + 1)


class DefenceTable(Family):
    """Rows of defence tables derived from the summed counts; cells keyed by (phase, system, eps)."""

    qualifier = "system"
    columns = DEFENCE_COLUMNS

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        if totals.evaluate is None:
            return []
        from .defence_report import derive

        return [self.row(cell["phase"], name, value, cell["system"], cell["epsilon"])  # type: ignore[arg-type]
                for cell in derive(totals.evaluate) if cell["phase"] in self.phases
                for name, value in cell["values"].items()]  # type: ignore[attr-defined]

    def cells(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        cells: dict[tuple[str, str, float | None], dict[str, Any]] = {}
        for row in rows:
            key = (row["phase"], row["attack"], row["epsilon"])
            cell = cells.setdefault(key, {"phase": row["phase"], "threat": THREATS[row["phase"]],
                                          "system": row["attack"], "epsilon": row["epsilon"]})
            cell[snake(row["name"])] = row["value"]
        return [cells[k] for k in sorted(cells, key=lambda k: (PHASE_ORDER.index(k[0]), k[1], k[2] or 0.0))]


class Hardening(DefenceTable):
    name = "hardening"
    phases = ("hardening",)
    key_sets = (
        KeySet("members", (
            Key(rf"member\.(?P<member>{NAME_PATTERN})\.train-correct", "count"),
            Key(rf"member\.(?P<member>{NAME_PATTERN})\.train-loss-sum", "sum"),
        ), lambda cfg, train: train and bool(cfg.defence_models), lambda cfg: 2 * len(cfg.defence_model_names),
            lambda cfg: {"member": set(cfg.defence_model_names)}),
        KeySet("hardening-table", table_keys("hardening"), lambda cfg, train: not train and bool(cfg.defence_models),
               table_max_keys, table_params),
    )
    title = "hardening and defences (all sites, PGD-10)"


FAMILY = Hardening()
