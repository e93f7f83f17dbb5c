"""``fedaegis sweep SWEEP.toml``: the command; the file format is :mod:`.sweep`, scheduling :mod:`.sweep_run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .sweep import SweepConfigError, load_sweep
from .terminal import fail, out, setup_logging

if TYPE_CHECKING:
    from .sweep_run import PointResult


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep file (TOML): sweep options, base run config, grid of values (see the README).")],
    db_url: Annotated[str | None, typer.Option("--db-url", help="SQLAlchemy URL of the results database (beats the file's db-url).")] = None,
    parallel: Annotated[int | None, typer.Option(help="Runs at once (beats the file's parallel).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to schedule runs on (beats the file's ray-address).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the points and what would run; run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The points' outcomes as JSON (schema 1).")] = False,
) -> None:
    """Run every point of a grid of federated simulations as Ray tasks; completed points are skipped."""
    import dataclasses

    from .sweep_run import run_sweep, summary_table

    setup_logging(False)
    try:
        plan = load_sweep(config, db_url)
        if parallel is not None or ray_address is not None:
            opts = dataclasses.replace(
                plan.options,
                parallel=plan.options.parallel if parallel is None else parallel,
                ray_address=plan.options.ray_address if ray_address is None else ray_address,
            )
            if opts.parallel < 1:
                raise SweepConfigError(f"--parallel = {opts.parallel}: must be >= 1")
            plan = dataclasses.replace(plan, options=opts)
    except SweepConfigError as exc:
        fail(str(exc))
    from ..shared.run.preflight import PreflightError, check_database

    try:
        check_database(plan.db_url, "--db-url" if db_url else "database")
    except PreflightError as exc:
        fail(str(exc))
    results: list[PointResult] = run_sweep(plan, dry_run=dry_run)
    counts = {s: sum(r.status == s for r in results) for s in ("completed", "skipped", "failed", "pending")}
    if as_json:
        out.print_json(json.dumps({"schema": 1, "sweep": plan.options.name, "points": [
            {"point": r.point.index, "values": r.point.values, "config_hash": r.point.config_hash,
             "status": r.status, "run_id": r.run_id, "accuracy": r.accuracy, "detail": r.detail} for r in results]}))
    else:
        out.print(summary_table(plan, results))
        out.print(", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "pending"))
    if counts["failed"]:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app`` (a second call is a no-op)."""
    if any(c.name == "sweep" or c.callback is sweep for c in app.registered_commands):
        return
    app.command("sweep")(sweep)
