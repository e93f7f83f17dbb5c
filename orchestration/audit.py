"""``fedaegis audit``: run a site's ClientApp in a short simulated federation and check every reply.

Before a hospital joins a consortium, its IT can run the exact ClientApp it will deploy (or
fedaegis' own) against simulated data and see, reply by reply, what would leave the
hospital: which records, which metric names, and whether the privacy protocol
(:mod:`fedaegis.shared.reply.protocol`) allows it. Tests use it the same way.

Every reply the server receives is recorded by :class:`~fedaegis.server.audit.AuditingGrid`,
where replies enter the server, so nothing a site sends can bypass the check. A reply that
violates the protocol is then *quarantined*: the server code (strategy, aggregation, the
results database) receives an error in its place, so the leaked values are never
aggregated or stored, and the audit goes on to the end of the run. Only metric *names* are
printed, never values.

The verdict is PASS when every request got a reply, no reply violates the protocol, no reply
is an error, and the run completed; otherwise FAIL, with exit code 1. Usage errors (an
unloadable ``--client-app``, a bad ``-c`` key) exit with 2.

By default the run goes to a temporary SQLite database that is deleted afterwards (with its
checkpoint); ``--db-url`` keeps it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import tempfile
import uuid as uuidlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid

    from .quarantine import ReplyVerdict

DEFAULT_CLIENT_APP = "fedaegis.client.app:app"


@dataclass
class AuditResult:
    client_app: str
    sites: int
    rounds: int
    replies: list[ReplyVerdict]
    requests: int
    run_uuid: str = ""
    run_status: str = ""
    server_error: str = ""

    @property
    def violations(self) -> list[ReplyVerdict]:
        return [r for r in self.replies if r.violations]

    @property
    def errors(self) -> list[ReplyVerdict]:
        return [r for r in self.replies if r.error and not r.violations]

    @property
    def missing(self) -> int:
        return max(0, self.requests - len(self.replies))

    @property
    def passed(self) -> bool:
        return (bool(self.replies) and not self.violations and not self.errors and not self.missing
                and not self.server_error and self.run_status == "completed")

    def reasons(self) -> list[str]:
        out = []
        if self.violations:
            names = sorted({v for r in self.violations for v in r.violations})
            out.append(f"{len(self.violations)} of {len(self.replies)} replies violate the privacy protocol: "
                       + "; ".join(names))
        if self.errors:
            out.append(f"{len(self.errors)} replies were errors, so the audit could not check them: "
                       + "; ".join(sorted({r.error for r in self.errors})))
        if self.missing:
            out.append(f"{self.missing} of {self.requests} requests got no reply")
        if not self.replies:
            out.append("no reply was received")
        if self.server_error:
            out.append(f"the run failed: {self.server_error}")
        elif self.run_status and self.run_status != "completed":
            out.append(f"the run ended {self.run_status}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,  # the version of every fedaegis --json document (README, "Scripting")
            "client_app": self.client_app, "sites": self.sites, "rounds": self.rounds,
            "passed": self.passed, "verdict": "PASS" if self.passed else "FAIL", "reasons": self.reasons(),
            "requests": self.requests, "replies": [{**asdict(r), "verdict": r.verdict} for r in self.replies],
            "violations": len(self.violations), "errors": len(self.errors), "missing": self.missing,
            "run_uuid": self.run_uuid, "run_status": self.run_status, "server_error": self.server_error,
        }


def load_client_app(ref: str) -> ClientApp:
    """``module:attribute`` -> the ClientApp it names (the current folder is importable too)."""
    from flwr.clientapp import ClientApp

    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--client-app {ref!r}: expected module:attribute, e.g. {DEFAULT_CLIENT_APP}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        if os.getcwd() not in sys.path:  # like `flwr run`, the app's folder is importable
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc2:
            raise ValueError(f"--client-app {ref!r}: cannot import {module_name!r} ({exc2})") from exc2
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--client-app {ref!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, ClientApp):
        raise ValueError(f"--client-app {ref!r} is a {type(obj).__name__}, not a flwr ClientApp")
    return obj


def run_audit(
    client_app: str = DEFAULT_CLIENT_APP,
    *,
    sites: int = 2,
    rounds: int = 1,
    overrides: dict[str, Any] | None = None,
    db_url: str | None = None,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> AuditResult:
    """Simulate ``rounds`` rounds with ``sites`` sites running ``client_app``; check every reply.

    ``overrides`` are run-config keys on top of the audit's short defaults (one local epoch,
    no attack suite). Raises ``ValueError``/``ConfigError`` for a bad app or config.
    """
    from .datainfo import data_config
    from ..shared.run.config import RunConfig
    from ..shared.store import RunStore
    from . import quarantine
    from .simulation import SimulationResources, simulate

    load_client_app(client_app)  # a usage error here, not in Flower's process
    tmp = None if db_url else tempfile.TemporaryDirectory(prefix="fedaegis-audit-")
    url = db_url or f"sqlite:///{Path(tmp.name) / 'audit.db'}"  # type: ignore[union-attr]
    cfg: dict[str, Any] = {
        "num-server-rounds": rounds, "local-epochs": 1, "attacks": "", "attack-samples": 32,
        "min-sites": min(2, sites), "run-name": "audit:" + re.sub(r"[^A-Za-z0-9._:-]", "-", client_app)[:140], **(overrides or {}), "db-url": url,
    }
    cfg["run-uuid"] = cfg.get("run-uuid") or uuidlib.uuid4().hex
    cfg.setdefault("dataset", "embedded:pneumoniamnist")
    for key, value in data_config(str(cfg["dataset"])).items():
        cfg.setdefault(key, value)
    RunConfig.from_flower(cfg)  # a wrong key or value fails here, named

    grids: list = []

    def wrap(grid: Grid) -> Grid:
        grids.append(quarantine.quarantine_grid(grid))
        return grids[-1]

    server_error, run_uuid, status = "", str(cfg["run-uuid"]), ""
    try:
        simulate(cfg, sites, SimulationResources(num_cpus=num_cpus), verbose=verbose, wrap_grid=wrap,
                 client_app=client_app, live_grid=f"{quarantine.__name__}:quarantine_grid")
    except Exception as exc:  # the server failed: still report what the sites sent
        server_error = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            server_error += f" ({type(cause).__name__}: {cause})"
    try:
        store = RunStore(url)
        runs = [r for r in store.list_runs() if r["uuid"] == run_uuid]
        if runs:  # absent when the server failed before creating the run
            run = store.get_run(runs[0]["id"])
            status = run["status"]
            if run["error"] and not server_error:
                server_error = run["error"]
            if tmp is not None and run["checkpoint_path"]:
                Path(run["checkpoint_path"]).unlink(missing_ok=True)
        store.engine.dispose()
    finally:
        if tmp is not None:
            tmp.cleanup()
    grid = grids[-1] if grids else None
    return AuditResult(
        client_app=client_app, sites=sites, rounds=rounds,
        replies=list(grid.verdicts) if grid else [], requests=grid.requests if grid else 0,
        run_uuid=run_uuid, run_status=status, server_error=server_error,
    )


def _print(result: AuditResult) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title=f"audit of {result.client_app}: every reply the server received")
    for col in ("#", "round", "node", "type", "records", "metrics", "verdict"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(result.replies, 1):
        detail = "; ".join(r.violations) or r.error
        verdict = r.verdict if not detail else f"{r.verdict}: {detail}"
        style = {"ok": "green", "VIOLATION": "bold red", "ERROR": "yellow"}[r.verdict]
        table.add_row(str(i), "-" if r.round is None else str(r.round), str(r.node_id), r.message_type,
                      ", ".join(r.records) or "-", ", ".join(r.metrics) or "-", f"[{style}]{_esc(verdict)}[/]")
    out.print(table)
    if result.passed:
        out.print(f"[bold green]PASS[/]: {len(result.replies)} replies from {result.sites} sites over "
                  f"{result.rounds} round(s) hold only aggregates allowed by the protocol")
    else:
        out.print("[bold red]FAIL[/]: " + _esc(" | ".join(result.reasons())))


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def audit(
    client_app: Annotated[str, typer.Option("--client-app", help="The ClientApp to audit, as module:attribute.")] = DEFAULT_CLIENT_APP,
    sites: Annotated[int, typer.Option(help="Simulated sites running it.")] = 2,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 1,
    dataset: Annotated[str, typer.Option(help="A MedMNIST .npz, an image/DICOM folder, or embedded:NAME.")] = "embedded:pneumoniamnist",
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="Any run-config KEY=VALUE (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable verdicts.")] = False,
    db_url: Annotated[str | None, typer.Option("--db-url", help="Keep the audit run in this database (default: a temporary one).")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray instance.")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Flower's own logs.")] = False,
) -> None:
    """Run a ClientApp in a short simulated federation and check every reply against the privacy protocol."""
    from ..shared.run.config import ConfigError
    from .terminal import console, fail, parse_overrides, setup_logging

    setup_logging(verbose)
    if sites < 1 or rounds < 1:
        fail("--sites and --rounds must be at least 1")
    overrides = {"dataset": dataset, **parse_overrides(config or [])}
    console.print(f"[bold]fedaegis audit[/]: {_esc(client_app)} at {sites} simulated sites, {rounds} round(s)")
    try:
        result = run_audit(client_app, sites=sites, rounds=rounds, overrides=overrides, db_url=db_url,
                           num_cpus=num_cpus, verbose=verbose)
    except (ConfigError, ValueError, ImportError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print(result)
    if not result.passed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``audit`` to ``app`` (a second call is a no-op)."""
    if any(c.name == "audit" or c.callback is audit for c in app.registered_commands):
        return
    app.command("audit")(audit)
