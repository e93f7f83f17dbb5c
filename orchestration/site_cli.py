"""``fedaegis site``: what a hospital runs on its own machine, about its own site.

``fedaegis site ledger --policy FILE`` prints the site's persistent privacy ledger (every
release of every run, the epsilon spent against the policy's lifetime budget);
``fedaegis site check --policy FILE`` validates a policy file and prints what it allows.
Nothing here talks to the coordinator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

site_app = typer.Typer(help="The hospital's own view: its privacy policy and ledger.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

PolicyOption = Annotated[str | None, typer.Option("--policy", help="The site's policy TOML (default: built-in).")]


def _policy(path: str | None):
    from ..shared.site.policy import PolicyError, SitePolicy

    try:
        return SitePolicy.from_toml(path) if path else SitePolicy()
    except PolicyError as exc:
        err.print(f"[bold red]error:[/] --policy: {exc}")
        raise typer.Exit(code=2) from None


@site_app.command("ledger")
def ledger(
    policy: PolicyOption = None,
    simulated: Annotated[str | None, typer.Option(help="A simulated site's ledger, e.g. 0-of-5 (partition 0 of 5).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The site's privacy ledger: every release, and the budget left."""
    from ..shared.site.ledger import LEDGER_FILE, PrivacyLedger

    pol = _policy(policy)
    folder = pol.state_dir / f"simulated-{simulated}" if simulated else pol.state_dir
    if not (folder / LEDGER_FILE).exists():
        err.print(f"[bold red]error:[/] no ledger in {folder} (this site has released nothing yet)")
        raise typer.Exit(code=1)
    book = PrivacyLedger(folder)
    releases = book.releases()
    eps, delta = book.spent()
    summary = {"state_dir": str(folder), "epsilon_spent": eps, "delta_spent": delta,
               "lifetime_epsilon": pol.dp_lifetime_epsilon, "epsilon_left": max(0.0, pol.dp_lifetime_epsilon - eps),
               "releases": len(releases), "clear_releases": sum(r.clear for r in releases),
               "exhausted": eps + pol.dp_max_epsilon > pol.dp_lifetime_epsilon + 1e-9}
    if as_json:
        out.print_json(json.dumps({**summary, "entries": [asdict(r) for r in releases]}))
        return
    table = Table(title=f"privacy ledger of {folder}")
    for col in ("run", "round", "request", "epsilon", "delta", "values", "clear"):
        table.add_column(col, justify="right" if col not in ("run", "request") else "left")
    for r in releases[-50:]:
        table.add_row(r.run, str(r.round), r.kind, f"{r.epsilon:.4g}", f"{r.delta:.2g}", str(r.values),
                      "yes" if r.clear else "")
    out.print(table)
    out.print(f"epsilon spent {eps:.4g} of {pol.dp_lifetime_epsilon:.4g} (delta {delta:.2g}) over {len(releases)} "
              f"releases ({summary['clear_releases']} without DP)"
              + ("; budget spent: the site releases nothing more" if summary["exhausted"] else ""))


@site_app.command("check")
def check(policy: PolicyOption = None) -> None:
    """Validate a policy file and print every field it sets (defaults included)."""
    pol = _policy(policy)
    table = Table(title=f"site policy ({pol.source})", show_header=False)
    for f in fields(pol):
        if f.name != "source":
            section, _, key = f.name.partition("_")
            table.add_row(f"{section}.{key.replace('_', '-')}", str(getattr(pol, f.name)))
    table.add_row("state folder", str(pol.state_dir))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``fedaegis site`` to the CLI (idempotent)."""
    if not any(g.name == "site" for g in app.registered_groups):
        app.add_typer(site_app, name="site")
