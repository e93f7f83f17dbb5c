"""``fedaegis report``: a self-contained HTML (or JSON) report of a stored run, or a comparison.

One run: :mod:`.report_content` says what it holds (and documents where each number comes
from), :mod:`.report_plots` draws it, :mod:`.report_html` renders the page. Several runs or a
sweep: :mod:`.report_compare`. This module is the command, and keeps the names other code
imports from it.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .options import DbOption
from .report_content import *  # noqa: F403 - the report's content API, as before the split
from .report_content import _attack_cells, _hardening, _num, _rows, build_report, report_json
from .report_html import *  # noqa: F403
from .report_html import CSS, _e, _eps, _f, _img, _note, _section, _table, render_html, report_html  # noqa: F401
from .report_plots import _figure, _png, _round_axis  # noqa: F401


# -- command --------------------------------------------------------------------------------
class ReportFormat(str, Enum):
    html = "html"
    json = "json"


def report(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids or uuids; two or more make a comparison.",
                                                     show_default=False)] = None,
    sweep: Annotated[str | None, typer.Option("--sweep", help="Compare every run of this `fedaegis sweep` (by its name).")] = None,
    db_url: DbOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write ('-': stdout). Default: "
                                                "./fedaegis-run-<id>.html (a comparison: ./fedaegis-compare-<ids>.html, "
                                                "a sweep: ./fedaegis-sweep-<name>.html); JSON goes to stdout.")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="html (self-contained page) or json.")] = ReportFormat.html,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout (same as --format json).")] = False,
) -> None:
    """Write a self-contained HTML (or JSON) report of a stored run, or one comparing runs or a sweep."""
    fmt = ReportFormat.json if as_json else fmt
    from rich.console import Console

    from ..shared.store import RunNotFoundError
    from .terminal import open_store as _open_store

    err = Console(stderr=True)

    def fail(message: str) -> None:
        err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
        raise typer.Exit(code=2)

    refs = list(runs or [])
    if not refs and not sweep:
        fail("give a RUN (id or uuid), several to compare, or --sweep NAME")
    store = _open_store(db_url)  # a bad --db-url: one masked line
    try:
        details = [store.get_run(ref) for ref in refs]
    except RunNotFoundError as exc:
        fail(str(exc))
    if sweep:
        found = [r for r in store.list_runs() if str(r["name"]).startswith(f"{sweep}:")]
        if not found:
            fail(f"--sweep {sweep}: no stored run is named {sweep}:HASH (see `fedaegis runs`)")
        details += [store.get_run(r["id"]) for r in found if r["id"] not in {d["id"] for d in details}]
    compare = len(details) > 1 or sweep is not None
    if compare:
        from .report_compare import comparison_html, comparison_json

        title = f"fedaegis sweep {sweep}" if sweep else "fedaegis runs " + ", ".join(f"#{d['id']}" for d in details)
        default = Path(f"fedaegis-sweep-{sweep}.html" if sweep else
                       "fedaegis-compare-" + "-".join(str(d["id"]) for d in details) + ".html")
        render = lambda: comparison_html(details, title)  # noqa: E731
        to_json = lambda: comparison_json(details, title)  # noqa: E731
        what = title
    else:
        detail = details[0]
        default = Path(f"fedaegis-run-{detail['id']}.html")
        render = lambda: report_html(detail)  # noqa: E731
        to_json = lambda: report_json(detail)  # noqa: E731
        what = f"report of run {detail['id']}"
    if fmt is ReportFormat.json:
        text = to_json()
    else:
        try:
            text = render()
        except ImportError as exc:
            fail(f"the HTML report needs matplotlib ({exc}); use --format json or install fedaegis[server]")
    if output is None and fmt is ReportFormat.html:
        output = default
    if output is None or str(output) == "-":
        typer.echo(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    err.print(f"{what} written to {output}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app`` (a second call is a no-op)."""
    if any(c.name == "report" or c.callback is report for c in app.registered_commands):
        return
    app.command("report")(report)
