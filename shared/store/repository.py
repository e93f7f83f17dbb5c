"""Read and write runs. Each round is one transaction: a crash loses at most the round in flight."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ..run.paths import create_private_file, private_dir, write_private
from ..results import FAMILIES, family_of
from ..results.base import MetricValue
from .schema import Base, ConfigEntry, Metric, Round, Run, Site, utcnow


@dataclass
class RoundRecord:
    """Everything the server learnt in one round, written in one transaction."""

    number: int
    started_at: datetime | None = None
    train_replies: int = 0
    evaluate_replies: int = 0
    failures: int = 0
    metrics: list[MetricValue] = field(default_factory=list)
    site_metrics: dict[str, list[MetricValue]] = field(default_factory=dict)


class RunNotFoundError(LookupError):
    pass


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3, the PostgreSQL driver fedaegis depends on.

    SQLAlchemy rejects the ``postgres://`` spelling many hosting services hand out, and its
    default driver for ``postgresql://`` has changed between releases.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder, foreign keys and WAL."""
    url = normalize_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        create_private_file(Path(url.removeprefix("sqlite:///")).expanduser())  # owner-only from the start
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _create_schema(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables; a server and a CLI opening a new database at once may race.

    ``create_all`` checks, then creates: the loser of the race sees "already exists" (or,
    on SQLite, "locked" where its read lock cannot be upgraded) and simply checks again.
    """
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:  # SQLite; PostgreSQL
            if not any(m in str(exc) for m in ("already exists", "database is locked")) or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _migrate(engine: Engine) -> None:
    """Bring a database written by an older fedaegis up to the current tables (SQLite and PostgreSQL).

    There is no version number: each step checks for what it adds. ``metrics.family`` (what a
    row is) is derived for old rows from their phase, as the families declare it.
    """
    columns = {c["name"] for c in inspect(engine).get_columns("metrics")}
    if "family" in columns:
        return
    with engine.begin() as conn:
        try:
            conn.execute(text("ALTER TABLE metrics ADD COLUMN family VARCHAR(40) NOT NULL DEFAULT ''"))
        except (OperationalError, ProgrammingError) as exc:  # another process migrated it first
            if "duplicate" not in str(exc).lower() and "already exists" not in str(exc).lower():
                raise
            return
        for family in FAMILIES:
            for phase in family.phases:
                conn.execute(text("UPDATE metrics SET family = :f WHERE phase = :p"), {"f": family.name, "p": phase})


class RunStore:
    """The results database behind every command (SQLite by default, any SQLAlchemy URL)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)  # safe to print
        _create_schema(self.engine)
        _migrate(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    # -- writing ---------------------------------------------------------------------------
    def create_run(
        self, *, uuid: str, name: str, config: dict[str, Any], num_rounds: int, flwr_run_id: str = ""
    ) -> int:
        with self._session.begin() as s:
            run = Run(
                uuid=uuid, name=name, num_rounds=num_rounds, flwr_run_id=str(flwr_run_id)
            )
            run.config = [ConfigEntry(key=k, value=v) for k, v in sorted(config.items())]
            s.add(run)
            s.flush()
            return run.id

    def record_round(
        self, run_id: int, record: RoundRecord, checkpoint: tuple[Path, str] | None = None
    ) -> None:
        """Store a round; ``checkpoint`` (path, sha256 of the round's global model) in the same transaction."""
        with self._session.begin() as s:
            rnd = Round(
                run_id=run_id,
                number=record.number,
                started_at=record.started_at,
                train_replies=record.train_replies,
                evaluate_replies=record.evaluate_replies,
                failures=record.failures,
            )
            rnd.metrics = [_metric(m) for m in record.metrics]
            for node_id, values in record.site_metrics.items():
                site = self._site(s, run_id, node_id)
                rnd.metrics += [_metric(m, site) for m in values]
            s.add(rnd)
            if checkpoint is not None:
                run = s.get_one(Run, run_id)
                run.checkpoint_path, run.checkpoint_sha256 = str(checkpoint[0]), checkpoint[1]

    def set_checkpoint(self, run_id: int, path: Path) -> None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with self._session.begin() as s:
            run = s.get_one(Run, run_id)
            run.checkpoint_path = str(path)
            run.checkpoint_sha256 = digest

    def finish_run(self, run_id: int, status: str = "completed", error: str = "") -> None:
        with self._session.begin() as s:
            run = s.get_one(Run, run_id)
            run.status = status
            run.error = error[:2000]
            run.finished_at = utcnow()

    # -- reading ---------------------------------------------------------------------------
    def list_runs(self) -> list[dict[str, Any]]:
        with self._session() as s:
            runs = s.scalars(
                select(Run).options(selectinload(Run.rounds)).order_by(Run.id)
            ).all()
            return [_run_summary(r) for r in runs]

    def get_run(self, ref: int | str) -> dict[str, Any]:
        """A run with config and per-round metrics, by numeric id or uuid."""
        with self._session() as s:
            stmt = select(Run).options(
                selectinload(Run.config),
                selectinload(Run.rounds).selectinload(Round.metrics).selectinload(Metric.site),
            )
            ref_s = str(ref)
            stmt = stmt.where(Run.id == int(ref_s)) if ref_s.isdigit() else stmt.where(Run.uuid == ref_s)
            run = s.scalars(stmt).first()
            if run is None:
                raise RunNotFoundError(f"no run {ref!r} in {self.url}")
            detail = _run_summary(run)
            detail["config"] = {c.key: c.value for c in run.config}
            detail["rounds"] = [_round_detail(r) for r in run.rounds]
            return detail

    def checkpoint_path(self, ref: int | str) -> Path:
        """The verified checkpoint file of a run (sha256 checked against the database)."""
        run = self.get_run(ref)
        path = Path(run["checkpoint_path"])
        if not run["checkpoint_path"] or not path.is_file():
            raise FileNotFoundError(f"run {ref}: checkpoint {str(path)!r} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != run["checkpoint_sha256"]:
            raise ValueError(f"run {ref}: checkpoint {path} does not match its recorded sha256")
        return path

    @staticmethod
    def _site(s: Session, run_id: int, node_id: str) -> Site:
        site = s.scalars(select(Site).where(Site.run_id == run_id, Site.node_id == node_id)).first()
        if site is None:
            site = Site(run_id=run_id, node_id=node_id)
            s.add(site)
            s.flush()
        return site


def _metric(m: MetricValue, site: Site | None = None) -> Metric:
    return Metric(
        phase=m.phase, name=m.name, value=float(m.value), attack=m.attack, epsilon=m.epsilon,
        family=m.family or family_of(m.phase), site=site,
    )


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "uuid": run.uuid,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "flwr_run_id": run.flwr_run_id,
        "num_rounds": run.num_rounds,
        "rounds_completed": len(run.rounds),
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "checkpoint_path": run.checkpoint_path,
        "checkpoint_sha256": run.checkpoint_sha256,
    }


def _round_detail(rnd: Round) -> dict[str, Any]:
    def rows(values: Iterable[Metric]) -> list[dict[str, Any]]:
        return [
            {"phase": m.phase, "name": m.name, "value": m.value, "attack": m.attack,
             "epsilon": m.epsilon, "family": m.family or family_of(m.phase)}
            for m in values
        ]

    global_metrics = [m for m in rnd.metrics if m.site is None]
    sites: dict[str, list[Metric]] = {}
    for m in rnd.metrics:
        if m.site is not None:
            sites.setdefault(m.site.node_id, []).append(m)
    return {
        "number": rnd.number,
        "started_at": _iso(rnd.started_at),
        "finished_at": _iso(rnd.finished_at),
        "train_replies": rnd.train_replies,
        "evaluate_replies": rnd.evaluate_replies,
        "failures": rnd.failures,
        "metrics": {f"{m.phase}.{m.name}": m.value for m in global_metrics if not m.attack},
        "metric_rows": rows(global_metrics),
        "sites": {node: rows(ms) for node, ms in sorted(sites.items())},
    }


def checkpoint_dir(home: Path) -> Path:
    return private_dir(home / "checkpoints")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file so a crash never leaves a half-written checkpoint; owner-only."""
    write_private(path, data)
