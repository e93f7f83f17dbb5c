"""Transfer attacks in the federation: how far PGD examples crafted on one model fool another.

With ``transfer = true`` each site, in the rounds ``attack-rounds`` names, crafts PGD examples
(:func:`fedaegis.shared.attacks.transfer.transfer_matrix`) on its own model of the round (the one
it sent for aggregation, ``local``) and on the global model it receives (``global``), and scores
each on both; with ``defence-models`` the members of the comparison against each other instead.
A site sends counts only, each group sized by its own ``n-count`` (the site's evaluation set)::

    transfer.<model>.n-count                                  images scored
    transfer.<model>.clean-correct                            of them, classified correctly
    transfer.<source>.<target>.eps=<eps>.n-count
    transfer.<source>.<target>.eps=<eps>.fooled-count         correct on the clean image, wrong on
                                                              the example crafted on <source>

A site without a model of its own this round (it was not sampled to train) sends every key
with zeros, so all sites send the same names (secure aggregation) and the totals count only
sites that measured. The server derives ``success-rate`` = fooled / the target's clean-correct
from the totals: rows phase ``transfer``, ``<source>-><target>`` in the ``attack`` column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import EPS_PATTERN, NAME_PATTERN, Column, Family, Key, KeySet, eps_name, snake

if TYPE_CHECKING:
    from ..run.config import RunConfig
    from .base import MetricValue

PREFIX = "transfer"
LOCAL, GLOBAL = "local", "global"  # a site's own model of the round, and the global model it receives
ARROW = "->"  # joins source and target in the store's ``attack`` column

_MODEL = rf"{PREFIX}\.(?P<model>{NAME_PATTERN})"
_PAIR = rf"{PREFIX}\.(?P<source>{NAME_PATTERN})\.(?P<target>{NAME_PATTERN})\.eps=(?P<eps>{EPS_PATTERN})"
_MODEL_RX = re.compile(rf"^{_MODEL}\.(?P<field>clean-correct|n-count)$")
_PAIR_RX = re.compile(rf"^{_PAIR}\.(?P<field>fooled-count|n-count)$")


def models(cfg: RunConfig) -> tuple[str, ...]:
    """The models a transfer request compares: the defence-comparison members, else local and global."""
    return cfg.defence_model_names if cfg.defence_models else (LOCAL, GLOBAL)


def encode(counts: Mapping[str, int], names: Sequence[str], epsilons: Sequence[float]) -> dict[str, int]:
    """``transfer_matrix`` counts -> wire keys, every group with its ``n-count``; ``{}`` gives the zeros
    of a site that did not measure (the same names, nothing added to the totals)."""
    n = int(counts.get("num-examples", 0))
    out: dict[str, int] = {}
    for tgt in names:
        out[f"{PREFIX}.{tgt}.n-count"] = n
        out[f"{PREFIX}.{tgt}.clean-correct"] = int(counts.get(f"{PREFIX}.{tgt}.clean-correct", 0))
        for src in names:
            for e in epsilons:
                group = f"{PREFIX}.{src}.{tgt}.eps={eps_name(e)}"
                out[f"{group}.n-count"] = n
                out[f"{group}.fooled-count"] = int(counts.get(f"{group}.fooled-count", 0))
    return out


def decode(metrics: Mapping[str, float]) -> dict[tuple[str, str, float], dict[str, float]]:
    """Wire metrics (one site's or summed) -> {(source, target, eps): fooled-count, n-count, clean-correct}."""
    clean: dict[str, float] = {}
    pairs: dict[tuple[str, str, float], dict[str, float]] = {}
    for name, value in metrics.items():
        if m := _MODEL_RX.match(name):
            if m["field"] == "clean-correct":
                clean[m["model"]] = float(value)
        elif m := _PAIR_RX.match(name):
            pairs.setdefault((m["source"], m["target"], float(m["eps"])), {})[m["field"]] = float(value)
    for (_, tgt, _), cell in pairs.items():
        cell["clean-correct"] = clean.get(tgt, 0.0)
    return pairs


def derive(cell: Mapping[str, float]) -> dict[str, float]:
    """A pair's success rate, fooled over the target's clean-correct (left out over none)."""
    clean = cell.get("clean-correct", 0.0)
    return {"success-rate": cell.get("fooled-count", 0.0) / clean} if clean else {}


def _params(cfg: RunConfig) -> dict[str, set[str]]:
    names = set(models(cfg))
    return {"model": names, "source": names, "target": names, "eps": {eps_name(e) for e in cfg.epsilon_values}}


def _max_keys(cfg: RunConfig) -> int:
    """Two keys and a suppression flag per group: one group per model, one per (source, target, eps)."""
    m = len(models(cfg))
    return 3 * (m + m * m * len(cfg.epsilon_values))


class Transfer(Family):
    name = "transfer"
    phases = ("transfer",)
    qualifier = "pair"
    claims = (f"{PREFIX}.",)
    key_sets = (KeySet("transfer", (
        Key(rf"{_MODEL}\.n-count", "size", size=".n-count"),
        Key(rf"{_MODEL}\.clean-correct", "count", size=".n-count"),
        Key(rf"{_PAIR}\.n-count", "size", size=".n-count"),
        Key(rf"{_PAIR}\.fooled-count", "count", size=".n-count"),
    ), lambda cfg, train: not train and cfg.transfer, _max_keys, _params),)
    title = "transfer attacks (all sites, PGD crafted on the source, scored on the target)"
    heading = "Transfer attacks"
    absent = ("This run did not measure transfer attacks: no transfer results were stored "
              "(run config 'transfer').")
    columns = (Column("eps", "epsilon", "eps"), Column("source", "source", "text"),
               Column("target", "target", "text"), Column("fooled", "fooled_count", ".0f"),
               Column("clean correct", "clean_correct", ".0f"), Column("success", "success_rate"),
               Column("n", "n_count", ".0f"))

    def phase_rows(self, phase: str, metrics: Mapping[str, float]) -> list[MetricValue]:
        if phase != "evaluate":
            return []
        return [self.row("transfer", name, value, f"{src}{ARROW}{tgt}", eps)
                for (src, tgt, eps), cell in sorted(decode(metrics).items())
                for name, value in {**cell, **derive(cell)}.items()]

    def cells(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One cell per (eps, source, target): the matrix of each budget, row by row."""
        cells: dict[tuple[float, str, str], dict[str, Any]] = {}
        for row in rows:
            src, _, tgt = str(row["attack"]).partition(ARROW)
            key = (row["epsilon"] or 0.0, src, tgt)
            cell = cells.setdefault(key, {"pair": row["attack"], "source": src, "target": tgt,
                                          "epsilon": row["epsilon"]})
            cell[snake(row["name"])] = row["value"]
        return [cells[k] for k in sorted(cells)]


FAMILY = Transfer()
