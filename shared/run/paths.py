"""Names that become paths, and files only their owner may read.

Run ids, run names and sweep names come from whoever configures a run (a
coordinator, a sweep file); they end up in file names under the project home, so
a separator, ``..`` or an absolute path would write anywhere. Everything private
(the database, checkpoints, keys, a site's ledger) is created owner-only
(0600 files in 0700 folders) from the start, never chmod-ed afterwards.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# letters, digits, '.', '_', '-' (and ':' where a caller allows it); never '.' or '..' alone
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]{0,149}$")
_SAFE_COLON = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:\-]{0,149}$")


def name_problem(value: str, *, allow_colon: bool = False, allow_empty: bool = False) -> str | None:
    """Why ``value`` cannot be a file-name component, or None if it can."""
    if value == "" and allow_empty:
        return None
    pattern = _SAFE_COLON if allow_colon else _SAFE
    if not pattern.match(value) or value in (".", ".."):
        extra = ", ':'" if allow_colon else ""
        return (f"must be 1-150 characters: letters, digits, '.', '_', '-'{extra}, "
                "not starting with '.' or '-' (no path separators, no absolute paths)")
    return None


def under(root: Path, *parts: str) -> Path:
    """``root/parts...``, refused if it would resolve outside ``root``."""
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} is outside {root}")
    return path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by the owner only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def create_private_file(path: Path) -> Path:
    """Create ``path`` empty and owner-only if it does not exist (e.g. before SQLite opens it).

    An existing file is never opened: closing any descriptor of an SQLite file drops every POSIX
    lock this process holds on it (SQLite's "how to corrupt" list), so opening it here while
    another engine of this process has it open let a second process write at the same time.
    """
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` as an owner-only file (temporary file, then rename)."""
    private_dir(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # a stale temporary file would keep its old mode
        f.write(data)
    os.replace(tmp, path)
