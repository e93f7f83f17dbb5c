"""``fedaegis show``'s tables of a run's results: every metric family the run has, one table each.

Cells and formats come from the families through the query layer (:mod:`fedaegis.shared.results.query`),
the same one ``report`` reads; families that declare no columns (backdoor, inversion audit, privacy)
share one table of their rows.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..shared.results import query
from ..shared.results.base import eps_display

# families shown in one table with another (the defended systems with the hardening table they compare)
JOINS = {"defences": "hardening"}


def defence_cells(rnd: dict[str, Any]) -> list[dict[str, Any]]:
    """The hardening table and the defended systems of one round, one entry per (phase, system, epsilon)."""
    return query.cells(rnd, "hardening") + query.cells(rnd, "defences")


def print_families(run: dict[str, Any], out: Console) -> None:
    """A table per family the run has (nothing for a family it has not)."""
    plain = []
    families = query.present([run])
    names = {f.name for f in families}
    for family in families:
        if family.name == "basics":
            continue
        if family.name == "refusals":
            rows = [[str(r["round"]), *[r[c.field] for c in family.columns]] for r in query.refusals(run)]
        elif family.columns:
            if JOINS.get(family.name) in names:
                continue  # in its partner's table
            joined = (family.name, *[j for j, partner in JOINS.items() if partner == family.name and j in names])
            rows = [[str(n), *cells] for n, c in query.run_cells(run, *joined)
                    for cells in query.table(family, [c])]
        else:
            plain += [(r["number"], row) for r in run["rounds"] for row in query.rows(r, family.name)]
            continue
        if rows:
            # a column no row has a value for (e.g. norms the sites' DP withheld, a CI without DP) is left out
            shown = [i for i, _ in enumerate(family.columns) if any(row[i + 1] != "-" for row in rows)]
            table = Table(title=family.title)
            table.add_column("round", justify="right")
            for i in shown:
                col = family.columns[i]
                table.add_column(col.header, justify="left" if col.spec == "text" else "right",
                                 no_wrap=col.spec == "text")
            for row in rows:
                table.add_row(row[0], *[row[i + 1] for i in shown])
            out.print(table)
    if plain:
        more = Table(title="threats and privacy (all sites)")
        for col in ("round", "phase", "metric", "qualifier", "value"):
            more.add_column(col, justify="right" if col in ("round", "value") else "left")
        for number, row in plain:
            qual = row["attack"] + (f" {eps_display(row['epsilon'])}" if row["epsilon"] is not None else "")
            value = query.number(row["value"])
            more.add_row(str(number), row["phase"], row["name"], qual, "-" if value is None else f"{value:.4f}")
        out.print(more)

