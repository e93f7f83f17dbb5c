"""Command-line options shared by the ``fedaegis`` commands."""

from __future__ import annotations

from typing import Annotated

import typer

DbOption = Annotated[
    str | None, typer.Option("--db-url", help="SQLAlchemy URL of the results database.")
]
