"""Segmentation: Dice and IoU of clean, attacked and worst-case inputs, per attack, norm and epsilon.

Sites send ``seg.<scope>.<field>-sum`` with each group's ``n-count``
(:mod:`fedaegis.shared.segmentation.evaluation`); the server stores the means and the Dice drops
against clean as phase ``segmentation`` rows, named as on the wire without ``-sum``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .base import EPS_PATTERN, Column, Family, Key, KeySet, eps_name, snake

if TYPE_CHECKING:
    from .base import MetricValue

SCOPES = (rf"(?:clean|attack\.[a-z0-9_]+\.(?:linf|l2)\.eps=(?P<eps>{EPS_PATTERN})"
          rf"|robust\.(?:linf|l2)\.eps=(?P<reps>{EPS_PATTERN}))")
_NAME = re.compile(rf"^seg\.(?:(?P<clean>clean)|attack\.(?P<attack>[a-z0-9_]+)\.(?P<norm>linf|l2)\.eps=(?P<eps>{EPS_PATTERN})"
                   rf"|robust\.(?P<rnorm>linf|l2)\.eps=(?P<reps>{EPS_PATTERN}))\.(?P<field>[a-z0-9\-]+)$")


def _eps_set(cfg) -> set[str]:
    return {eps_name(e) for e in cfg.epsilon_values}


class Segmentation(Family):
    name = "segmentation"
    phases = ("segmentation",)
    key_sets = (KeySet("segmentation", (
        Key(r"seg\.(?:volumes|samples|voxels)-count", "size"),  # the site's test volumes, slices, voxels
        Key(r"train-loss-sum", "sum"),
        Key(r"seg\.train\.samples-count", "size", size="seg.train.samples-count"),
        Key(r"seg\.train\.(?:voxels|steps|adversarial)-count", "meta"),
        Key(rf"seg\.{SCOPES}\.n-count", "size", size=".n-count"),
        Key(rf"seg\.{SCOPES}\.[a-z0-9\-]+-count", "count", size=".n-count"),
        # Dice and IoU per volume lie in [0, 1]
        Key(rf"seg\.{SCOPES}\.(?:dice|dice-class[0-9]+|target-iou|clean-target-iou)-sum", "sum", bound=1.0,
            size=".n-count"),
        Key(rf"seg\.{SCOPES}\.[a-z0-9\-]+-sum", "sum", size=".n-count"),
    ), lambda cfg, train: cfg.task == "segmentation",
        lambda cfg: 64 * (2 + len(cfg.epsilon_values) * (1 + len(cfg.seg_attacks.split(",")))) * cfg.num_classes,
        lambda cfg: {"eps": _eps_set(cfg), "reps": _eps_set(cfg)}),)
    title = "segmentation (all sites, Dice per volume)"
    heading = "Segmentation robustness"
    absent = "This run did not evaluate segmentation: no segmentation results were stored."
    columns = (Column("candidate", "candidate", "text"), Column("norm", "norm", "text"),
               Column("eps", "epsilon", "eps"), Column("dice", "dice"), Column("dice drop", "dice_drop"),
               Column("target IoU", "target_iou"))

    def phase_rows(self, phase: str, metrics: Mapping[str, float]) -> list[MetricValue]:
        if not any(k.startswith("seg.") for k in metrics):
            return []
        from ..segmentation.evaluation import segmentation_summary

        return [self.row("segmentation", k, v) for k, v in segmentation_summary(metrics).items()]

    def cells(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One cell per candidate (clean, an attack, the worst case), norm and epsilon."""
        cells: dict[tuple[str, str, float], dict[str, Any]] = {}
        for row in rows:
            m = _NAME.match(row["name"])
            if not m:
                continue
            candidate = "clean" if m["clean"] else m["attack"] or "worst case"
            norm, eps = m["norm"] or m["rnorm"] or "", m["eps"] or m["reps"]
            eps_f = None if eps is None else float(eps)
            key = (candidate, norm, -1.0 if eps_f is None else eps_f)
            cell = cells.setdefault(key, {"candidate": candidate, "norm": norm or None, "epsilon": eps_f})
            cell[snake(m["field"])] = row["value"]
        order = lambda k: (k[0] != "clean", k[0] == "worst case", k[0], k[1], k[2])  # noqa: E731
        return [cells[k] for k in sorted(cells, key=order)]


FAMILY = Segmentation()
