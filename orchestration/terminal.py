"""What every ``fedaegis`` command shares: the consoles, one-line failures, logging, ``-c`` parsing.

A home of its own so that the command modules (``audit``, ``sweep_cli``, ``report``, ...) use
these without importing the CLI app, which only registers commands (nothing imports it back).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from ..shared.run.config import default_db_url
from ..shared.run.preflight import PreflightError
from ..shared.run.redact import known_secrets, mask_secrets
from ..shared.store import RunStore

console = Console(stderr=True, emoji=False)
out = Console(emoji=False)


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    """fedaegis progress through Rich (warnings only with ``--quiet``); Flower's own log only with ``--verbose``."""
    from flwr.supercore.logger import update_console_handler

    ours = logging.getLogger("fedaegis")
    ours.handlers = [RichHandler(console=console, show_path=False, markup=False)]
    ours.setLevel(logging.WARNING if quiet else logging.INFO)
    ours.propagate = False
    logging.getLogger("flwr").propagate = False
    _site_log(verbose)
    # Flower logs every site's exception as a traceback, every round; the run's end names each distinct one once
    update_console_handler(level=logging.INFO if verbose else logging.CRITICAL)


def site_log_path() -> Path:
    """Where simulated sites (their data loaded here in preflight, and each site process) name each
    skipped file and why, and log their errors."""
    from ..client.site_log import simulated_sites_log

    return simulated_sites_log()


def _site_log(verbose: bool) -> None:
    """The sites' own log (``fedaegis.site``) goes to a file; the console gets a one-line summary."""
    site = logging.getLogger("fedaegis.site")
    path = site_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    site.handlers = [handler, *logging.getLogger("fedaegis").handlers] if verbose else [handler]
    site.propagate = False


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are parsed as TOML scalars, like ``flwr run --run-config``."""
    import tomllib

    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--config")
        try:
            result[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            result[key.strip()] = raw
    return result


def secrets() -> list[str]:
    """Passwords of every URL on the command line (and ``$FEDAEGIS_DB_URL``): never printed."""
    return known_secrets(*sys.argv)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, passwords masked, and the exit code (2: nothing was started)."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(mask_secrets(' '.join(str(message).split()), secrets()))}",
                  soft_wrap=True)
    raise typer.Exit(code=code)


def open_store(db_url: str | None) -> RunStore:
    """The results database, or one line naming ``--db-url`` and why it cannot be opened."""
    from ..shared.run.preflight import check_database

    url = db_url or default_db_url()
    try:
        check_database(url, "--db-url" if db_url else "$FEDAEGIS_DB_URL" if os.environ.get("FEDAEGIS_DB_URL") else "database")
    except PreflightError as exc:
        fail(str(exc))
    return RunStore(url)
