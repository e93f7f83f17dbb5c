"""The site's persistent privacy ledger and secret, in the site's own state folder.

Every release of every run is written here before it leaves (epsilon, delta, run,
round, message type, how many values), in one SQLite file that survives runs and
restarts; the lifetime budget is the site policy's, never the server's. When the
next release would exceed it, the site refuses the request (``dp.lifetime-epsilon``).
The hospital reads it with ``fedaegis site ledger --policy FILE``.

The site secret (32 random bytes, created once, mode 0600) chooses the site's fixed
evaluation sets: nothing the server sends can select samples within them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SECRET_FILE = "site-secret"
LEDGER_FILE = "privacy-ledger.sqlite"


def site_secret(state_dir: Path) -> bytes:
    """The site's secret, created on first use (never sent anywhere)."""
    path = state_dir / SECRET_FILE
    if path.exists():
        return path.read_bytes()
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{SECRET_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    try:
        os.link(tmp, path)  # atomic: the first site process to get here sets the secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def derived_seed(secret: bytes, *parts: object) -> int:
    """A 63-bit seed from the secret and public parts (HMAC-SHA256): unpredictable without the secret."""
    digest = hmac.new(secret, "\x1f".join(map(str, parts)).encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Release:
    at: float
    run: str
    round: int
    kind: str
    epsilon: float
    delta: float
    values: int
    clear: bool  # released without DP (the policy allowed it)


class PrivacyLedger:
    """Append-only record of the site's releases and their privacy cost."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / LEDGER_FILE
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS releases (id INTEGER PRIMARY KEY, at REAL NOT NULL, run TEXT NOT NULL,"
                " round INTEGER NOT NULL, kind TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL,"
                " n_values INTEGER NOT NULL, clear INTEGER NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level="IMMEDIATE")

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) spent so far, by basic composition over every release."""
        with self._connect() as db:
            eps, delta = db.execute("SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM releases").fetchone()
        return float(eps), float(delta)

    def charge(self, *, lifetime: float, epsilon: float, delta: float, run: str, round: int, kind: str,
               values: int, clear: bool = False) -> bool:
        """Record a release if it fits the lifetime budget (checked and written in one transaction)."""
        with self._connect() as db:
            (spent,) = db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM releases").fetchone()
            if spent + epsilon > lifetime + 1e-9:
                return False
            db.execute("INSERT INTO releases (at, run, round, kind, epsilon, delta, n_values, clear)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (time.time(), run, round, kind, epsilon, delta, values, int(clear)))
        return True

    def releases(self) -> list[Release]:
        with self._connect() as db:
            rows = db.execute("SELECT at, run, round, kind, epsilon, delta, n_values, clear FROM releases"
                              " ORDER BY id").fetchall()
        return [Release(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]
