"""Metric families: each family of results as one unit, from a site's reply to ``show`` and ``report``.

One module per family (see :mod:`.base` for the contract); this registry lists them. Adding a
family: its module here and one line in ``FAMILIES``, plus the site code that computes it (and a
README line). The reply schema, the server's rows and the query layer (:mod:`.query`) read
``FAMILIES`` and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import (
    attacks,
    backdoor,
    basics,
    defences,
    detection,
    hardening,
    inversion,
    landscape,
    privacy,
    refusals,
    segmentation,
    transfer,
)
from .base import Column, Family, Key, KeySet, RoundTotals, declared, eps_display, eps_name

if TYPE_CHECKING:
    from .base import MetricValue

FAMILIES: tuple[Family, ...] = (
    basics.FAMILY, segmentation.FAMILY, attacks.FAMILY, transfer.FAMILY, backdoor.FAMILY, inversion.FAMILY,
    privacy.FAMILY, hardening.FAMILY, defences.FAMILY, detection.FAMILY, refusals.FAMILY, landscape.FAMILY,
)
BY_NAME = {f.name: f for f in FAMILIES}
_BY_PHASE = {phase: f for f in FAMILIES for phase in f.phases}


def family_of(phase: str) -> str:
    """The family whose rows carry ``phase`` ("" for a phase no family writes)."""
    f = _BY_PHASE.get(phase)
    return f.name if f else ""


def claimed() -> tuple[str, ...]:
    """Wire prefixes whose totals their family stores itself (the rest are plain phase rows)."""
    return tuple(p for f in FAMILIES for p in f.claims)


def ratios() -> dict[str, tuple[str, str]]:
    """Every family's derived ratio -> (numerator, denominator), in registry order."""
    return {name: pair for f in FAMILIES for name, pair in f.ratios.items()}


def round_rows(totals: RoundTotals) -> tuple[list[MetricValue], dict[str, list[MetricValue]]]:
    """The database rows of one round: federation-wide, and each site's (by node id)."""
    rows: list[MetricValue] = []
    sites: dict[str, list[MetricValue]] = {}
    for family in FAMILIES:
        rows += family.rows(totals)
        for node, values in family.site_rows(totals).items():
            sites.setdefault(node, []).extend(values)
    return rows, sites


__all__ = ["BY_NAME", "Column", "FAMILIES", "Family", "Key", "KeySet", "RoundTotals", "claimed", "declared",
           "eps_display", "eps_name", "family_of", "ratios", "round_rows"]
