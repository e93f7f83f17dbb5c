"""The results database (SQLAlchemy 2): runs, config, rounds, sites, metrics, checkpoints."""

from .repository import MetricValue, RoundRecord, RunNotFoundError, RunStore
from .schema import Base, ConfigEntry, Metric, Round, Run, Site

__all__ = [
    "Base", "ConfigEntry", "Metric", "MetricValue", "Round", "RoundRecord", "Run",
    "RunNotFoundError", "RunStore", "Site",
]
