"""``fedaegis privacy``: the privacy/utility table across stored runs, one row per run.

Each run that audited its sites' first updates for gradient inversion contributes its
defence (none, dp-sgd or pruning), the DP-SGD epsilon the accountant reported (inf
without DP-SGD), the final global test accuracy and the mean reconstruction PSNR/SSIM.
Runs of a sweep over ``dp-epsilon`` or ``prune-fraction`` thus give the privacy/utility
trade-off of the consortium's own data and model.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .options import DbOption

if TYPE_CHECKING:  # shared.privacy imports Opacus and MONAI: seconds the CLI must not spend on --help
    from ..shared.privacy import PrivacyRow

out = Console()


def privacy_row(run: dict[str, Any]) -> PrivacyRow | None:
    """The run's row, or None when no round stored an inversion audit."""
    from ..shared.privacy import PrivacyRow

    rows = [row for rnd in run["rounds"] for row in rnd["metric_rows"]]
    audit = {r["name"]: r for r in rows if r["phase"] == "inversion"}
    if "psnr" not in audit:
        return None
    epsilons = [r["value"] for r in rows if r["phase"] == "privacy" and r["name"] == "dp-sgd-epsilon"]
    accuracy = run["rounds"][-1]["metrics"].get("evaluate.accuracy", math.nan)
    return PrivacyRow(defence=audit["psnr"]["attack"] or "none", epsilon=max(epsilons) if epsilons else math.inf,
                      accuracy=float(accuracy), psnr=float(audit["psnr"]["value"]),
                      ssim=float(audit.get("ssim", {}).get("value", math.nan)))


def privacy(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids or uuids (default: every run with an audit).")] = None,
    db_url: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Privacy/utility table: defence, epsilon, accuracy and inversion PSNR/SSIM per run."""
    from .terminal import open_store as _open_store

    store = _open_store(db_url)
    refs = runs or [r["id"] for r in store.list_runs()]
    table: list[tuple[dict[str, Any], PrivacyRow]] = []
    for ref in refs:
        try:
            run = store.get_run(ref)
        except LookupError as exc:
            out.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from exc
        row = privacy_row(run)
        if row is None and runs:
            out.print(f"[bold red]error:[/] run {ref} has no inversion audit (run config 'inversion-audit')")
            raise typer.Exit(code=2)
        if row is not None:
            table.append((run, row))
    if as_json:
        # epsilon null: no formal guarantee (JSON has no infinity)
        out.print_json(json.dumps({"schema": 1, "runs": [
            {"run": run["uuid"], **row.as_dict(), "epsilon": row.epsilon if math.isfinite(row.epsilon) else None}
            for run, row in table]}))
        return
    if not table:
        out.print(f"no run with an inversion audit in {store.url} (run config 'inversion-audit', e.g. "
                  "-c inversion-audit='\"idlg\"')", highlight=False, markup=False)
        return
    view = Table(title="privacy/utility per defence (inversion audit of the first update)")
    for col in ("run", "name", "defence", "epsilon", "accuracy", "PSNR dB", "SSIM"):
        view.add_column(col, justify="left" if col in ("name", "defence") else "right")
    for run, row in table:
        view.add_row(str(run["id"]), run["name"], row.defence, f"{row.epsilon:.2f}", f"{row.accuracy:.3f}",
                     f"{row.psnr:.2f}", f"{row.ssim:.3f}")
    out.print(view)


def register(app: typer.Typer) -> None:
    """Add ``privacy`` to ``app`` (a second call is a no-op)."""
    if any(c.name == "privacy" for c in app.registered_commands):
        return
    app.command("privacy")(privacy)
