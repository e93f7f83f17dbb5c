"""Adversarial-example detection: the federated ROC AUC of a detector, per epsilon.

Sites send only fixed-bin histograms of their detector's scores on clean and attacked inputs
(:mod:`fedaegis.shared.detection.roc`); the server sums them and keeps only the AUC and the two
counts (the bins are never stored): rows phase ``detection``, the detector in the ``attack`` column.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import EPS_PATTERN, NAME_PATTERN, Column, Family, Key, KeySet, RoundTotals, eps_name

if TYPE_CHECKING:
    from .base import MetricValue

_GROUP = rf"detector\.(?P<detector>{NAME_PATTERN})\.eps=(?P<eps>{EPS_PATTERN})"


class Detection(Family):
    name = "detection"
    phases = ("detection",)
    qualifier = "detector"
    claims = ("detector.",)
    key_sets = (KeySet("detection", (
        # each patient gives two scored inputs (clean and attacked): sensitivity 2
        Key(rf"{_GROUP}\.num-examples", "size", size=".num-examples"),
        Key(rf"{_GROUP}\.(?:clean|adv)-bin[0-9]+-count", "count", sensitivity=2, size=".num-examples"),
    ), lambda cfg, train: not train and bool(cfg.detector),
        lambda cfg: len(cfg.epsilon_values) * (1 + 2 * 9999),
        lambda cfg: {"detector": {cfg.detector}, "eps": {eps_name(e) for e in cfg.epsilon_values}}),)
    title = "adversarial-example detection (federated ROC AUC, PGD-10 on the standard model)"
    heading = "Adversarial-example detection"
    absent = ("This run did not evaluate an adversarial-example detector: no detection results were stored "
              "(run config 'detector').")
    columns = (Column("detector", "detector", "text"), Column("eps", "epsilon", "eps"),
               Column("ROC AUC", "roc_auc"), Column("clean", "clean_count", ".0f"),
               Column("adversarial", "adv_count", ".0f"))

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        evaluate = totals.evaluate or {}
        if not any(k.startswith("detector.") for k in evaluate):
            return []
        from ..detection import decode_histograms
        from ..detection.roc import binned_auc

        rows = []
        for (detector, eps), (clean, adv) in sorted(decode_histograms(evaluate).items()):
            auc = binned_auc(clean, adv)
            rows += [self.row("detection", "clean-count", float(clean.sum()), detector, eps),
                     self.row("detection", "adv-count", float(adv.sum()), detector, eps)]
            if not math.isnan(auc):
                rows.append(self.row("detection", "roc-auc", auc, detector, eps))
        return rows


FAMILY = Detection()
