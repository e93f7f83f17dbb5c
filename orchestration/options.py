"""Command-line options shared by the ``fedaegis`` commands."""

from __future__ import annotations

from typing import Annotated

import typer

JSON_SCHEMA = 1  # version of every --json document, the report's included (see README, "Scripting")

DbOption = Annotated[
    str | None, typer.Option("--db-url", help="SQLAlchemy URL of the results database.")
]
