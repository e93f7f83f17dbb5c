"""SQLAlchemy 2 ORM tables: runs, their config, rounds, sites and metrics.

Metric rows are long-format (one value per row) so that new kinds of evaluation
(attacks, epsilons, defences) add rows, not columns. ``site_id`` NULL means the
value is the federation-wide aggregate of the round; ``family`` names the metric
family a row belongs to (:mod:`fedaegis.shared.results`), ``attack`` its qualifier.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="running")
    error: Mapped[str] = mapped_column(String(2000), default="")
    flwr_run_id: Mapped[str] = mapped_column(String(40), default="")
    num_rounds: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    checkpoint_path: Mapped[str] = mapped_column(String(1000), default="")
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), default="")

    config: Mapped[list[ConfigEntry]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="ConfigEntry.key"
    )
    rounds: Mapped[list[Round]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="Round.number"
    )
    sites: Mapped[list[Site]] = relationship(back_populates="run", cascade="all, delete-orphan")


class ConfigEntry(Base):
    __tablename__ = "run_config"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[object] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="config")


class Site(Base):
    """A participating node, known by its Flower node id; never by patient data."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("run_id", "node_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200), default="")

    run: Mapped[Run] = relationship(back_populates="sites")


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    train_replies: Mapped[int] = mapped_column(Integer, default=0)
    evaluate_replies: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)

    run: Mapped[Run] = relationship(back_populates="rounds")
    metrics: Mapped[list[Metric]] = relationship(
        back_populates="round", cascade="all, delete-orphan"
    )


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), nullable=True
    )
    phase: Mapped[str] = mapped_column(String(40))  # train | evaluate | attack | ...
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    # the family's qualifier (fedaegis.shared.results: an attack, a system, a detector, a defence, a request)
    attack: Mapped[str] = mapped_column(String(100), default="")
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # what the row is: the metric family that wrote it (fedaegis.shared.results; added by migration to older files)
    family: Mapped[str] = mapped_column(String(40), default="", server_default="")

    round: Mapped[Round] = relationship(back_populates="metrics")
    site: Mapped[Site | None] = relationship()
