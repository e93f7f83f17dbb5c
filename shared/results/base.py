"""The contract of a metric family: what a site may send, what the server stores, how it is shown.

A family of results (attack cells, the hardening table, detection, ...) is one unit, the way an
attack is one file behind :class:`fedaegis.shared.attacks.base.Attack`. A :class:`Family` declares

- its reply keys (:class:`KeySet` of :class:`Key`): names, types, group sizes and sensitivities,
  read by the site guard and the audit (:mod:`fedaegis.shared.reply.schema`), the protocol's
  group sizes (:mod:`fedaegis.shared.reply.protocol`) and metric DP (:mod:`fedaegis.shared.reply.metric_dp`);
- how the server derives figures from the summed counts (``ratios`` and :meth:`Family.rows`);
- how the store keeps them: the ``phases`` it writes, every row tagged with the family's name
  (the store's ``family`` column) and ``qualifier`` naming what the ``attack`` column holds;
- how ``show`` and ``report`` present them (:meth:`Family.cells`, ``columns``, ``title``).

Epsilon appears in names in one format only: :func:`eps_name`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .eps import eps_display, eps_name  # noqa: F401 - the families' epsilon format

if TYPE_CHECKING:
    from ..run.config import RunConfig


def unit_ratio(ratio: float) -> float:
    """A ratio of summed counts clamped to [0, 1]: metric DP's noise can push a count past its group's size,
    and clamping is post-processing (it costs no privacy)."""
    return min(1.0, max(0.0, ratio))


EPS_PATTERN = r"[0-9.e+\-]+"  # an epsilon as written by eps_name
NAME_PATTERN = r"[a-z0-9_\-+]+"  # an attack, system, detector or member label




@dataclass(frozen=True)
class MetricValue:
    """One aggregate number of a metric family; ``attack`` (the family's qualifier) and ``epsilon`` qualify it."""

    phase: str
    name: str
    value: float
    attack: str = ""
    epsilon: float | None = None
    family: str = ""  # "" : the family that writes ``phase`` (fedaegis.shared.results.family_of)


@dataclass(frozen=True)
class Key:
    """One declared key: a regex over the full name, its type, and its group's size key."""

    pattern: str
    kind: str  # size | count | sum | meta
    sensitivity: float = 1.0  # count: how far one patient moves it
    bound: float | None = None  # sum: per-sample absolute bound (None: unbounded)
    size: str = "num-examples"  # the group's size key; ".x" means "<this key's group>.x"

    def size_key(self, name: str) -> str:
        return name.rsplit(".", 1)[0] + self.size if self.size.startswith(".") else self.size


def _no_params(cfg: RunConfig) -> dict[str, set[str]]:
    return {}


@dataclass(frozen=True)
class KeySet:
    """Keys a request asks for together: when it asks (``applies``), how many, with which parameters."""

    name: str
    keys: tuple[Key, ...]
    applies: Callable[[RunConfig, bool], bool]  # (request, is_train) -> does the request ask for it
    max_keys: Callable[[RunConfig], int]
    params: Callable[[RunConfig], dict[str, set[str]]] = _no_params  # allowed values of named groups


@dataclass(frozen=True)
class Column:
    """One column of a family's table in ``show`` and ``report``: header, cell field, number format."""

    header: str
    field: str
    spec: str = ".3f"  # a format spec; "eps": an epsilon (eps_display); "text": as it is


@dataclass
class RoundTotals:
    """What the server knows after a round: the sums over sites (with ratios), and each site's values."""

    cfg: RunConfig
    train: Mapping[str, float] | None
    evaluate: Mapping[str, float] | None
    train_replies: int = 0
    site_train: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # with each site's ratios
    site_evaluate: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    refusals: Sequence[tuple[str, str, str]] = ()  # (node, phase, site-policy field)

    def phases(self) -> list[tuple[str, Mapping[str, float]]]:
        return [(p, m) for p, m in (("train", self.train), ("evaluate", self.evaluate)) if m is not None]


def snake(name: str) -> str:
    return name.replace("-", "_")


CLAIMED: list[str] = []  # every family's claims (filled as each family class is defined)


class Family:
    """One family of results. Subclasses set the class attributes and override what they derive."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CLAIMED.extend(p for p in cls.__dict__.get("claims", ()) if p not in CLAIMED)

    name: ClassVar[str]
    phases: ClassVar[tuple[str, ...]] = ()  # the store phases of its rows
    qualifier: ClassVar[str] = ""  # what the store's ``attack`` column holds for its rows ("" unused)
    key_sets: ClassVar[tuple[KeySet, ...]] = ()
    ratios: ClassVar[Mapping[str, tuple[str, str]]] = {}  # derived ratio -> (numerator, denominator) of totals
    claims: ClassVar[tuple[str, ...]] = ()  # wire prefixes it stores itself (not as plain phase rows)
    title: ClassVar[str] = ""  # the title of its table in ``show`` and ``report``
    columns: ClassVar[tuple[Column, ...]] = ()
    heading: ClassVar[str] = ""  # a section of its own in ``report`` under this heading ("": none, or a bespoke one)
    absent: ClassVar[str] = ""  # what ``report`` says when a run has none of its rows

    def dp_withheld(self, name: str) -> bool:
        """Whether metric DP withholds ``name`` (declared a sum without a per-sample bound): sent as 0."""
        return any(k.kind == "sum" and k.bound is None and re.fullmatch(k.pattern, name)
                   for ks in self.key_sets for k in ks.keys)

    # -- server: rows from the round's totals -------------------------------------------------
    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        """Federation-wide rows of one round."""
        return [r for phase, metrics in totals.phases() for r in self.phase_rows(phase, metrics)]

    def site_rows(self, totals: RoundTotals) -> dict[str, list[MetricValue]]:
        """Each site's rows of one round (by node id)."""
        out: dict[str, list[MetricValue]] = {}
        for phase, sites in (("train", totals.site_train), ("evaluate", totals.site_evaluate)):
            for node, values in sites.items():
                rows = self.phase_rows(phase, values)
                if rows:
                    out.setdefault(node, []).extend(rows)
        return out

    def phase_rows(self, phase: str, metrics: Mapping[str, float]) -> list[MetricValue]:
        """Rows from one phase's metrics (summed or one site's); families that derive per phase override it."""
        return []

    def row(self, phase: str, name: str, value: float, qualifier: str = "", epsilon: float | None = None
            ) -> MetricValue:
    
        return MetricValue(phase, name, float(value), attack=qualifier, epsilon=epsilon, family=self.name)

    # -- query: stored rows -> cells -----------------------------------------------------------
    def cells(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The family's rows of one round grouped into cells, one per (qualifier, epsilon), sorted.

        Each cell holds the qualifier (under ``self.qualifier``), ``epsilon`` and every stored
        name in snake_case.
        """
        cells: dict[tuple[str, float], dict[str, Any]] = {}
        for row in rows:
            key = (row["attack"], row["epsilon"])
            cell = cells.setdefault(key, {self.qualifier or "label": row["attack"], "epsilon": row["epsilon"]})
            cell[snake(row["name"])] = row["value"]
        return [cells[k] for k in sorted(cells, key=lambda k: (k[0], -1.0 if k[1] is None else k[1]))]


def declared(families: Iterable[Family]) -> tuple[KeySet, ...]:
    return tuple(ks for f in families for ks in f.key_sets)
