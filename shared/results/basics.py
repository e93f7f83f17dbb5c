"""Training and evaluation basics: sample counts, accuracy and loss, and the bookkeeping every reply carries.

Its rows are the plain phase rows (``train``/``evaluate``): every summed value of the round that no
other family stores itself, and the ratios below; under metric DP, the accuracy's noise interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Mapping

from .base import CLAIMED, Family, Key, KeySet, RoundTotals
from .privacy import dp_noise

if TYPE_CHECKING:
    from .base import MetricValue

FILES_PER_PATIENT = 4  # one patient may own several files (a DICOM series, repeat scans): ``skipped`` counts files


def _classification(cfg) -> bool:
    return cfg.task == "classification"


class Basics(Family):
    name = "basics"
    phases = ("train", "evaluate")
    key_sets = (
        KeySet("bookkeeping", (
            Key(r"num-examples", "size"),
            Key(r"skipped", "count", sensitivity=FILES_PER_PATIENT),
            Key(r"(?:[a-z0-9_.=+\-]+\.)?suppressed-count", "meta"),
            Key(r"dp-withheld-count", "meta"),
            Key(r"dp\.epsilon-sum", "meta"),
            Key(r"dp\.noise-std-sum", "meta"),
        ), lambda cfg, train: True, lambda cfg: 6),
        KeySet("evaluation", (
            Key(r"correct", "count"),
            Key(r"loss-sum", "sum"),  # cross-entropy: no bound
        ), lambda cfg, train: not train and _classification(cfg), lambda cfg: 2),
        KeySet("training", (
            Key(r"train-correct", "count"),
            Key(r"train-loss-sum", "sum"),
            # SSAT's unlabelled pool (its size) and how many of it were pseudo-labelled in the last epoch
            Key(r"train-unlabelled-count", "size", size="train-unlabelled-count"),
            Key(r"train-pseudo-labelled-count", "count", size="train-unlabelled-count"),
        ), lambda cfg, train: train and _classification(cfg), lambda cfg: 8),
    )
    ratios = {
        "accuracy": ("correct", "num-examples"),
        "loss": ("loss-sum", "num-examples"),
        "train-accuracy": ("train-correct", "num-examples"),
        "train-loss": ("train-loss-sum", "num-examples"),
    }

    def phase_rows(self, phase: str, metrics: Mapping[str, float]) -> list[MetricValue]:
        skip = tuple(CLAIMED)  # what another family stores itself
        return [self.row(phase, k, v) for k, v in metrics.items() if not k.startswith(skip)]

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        rows = super().rows(totals)
        noise = dp_noise(totals)
        if noise and totals.evaluate is not None:
            ci = noise.interval(totals.evaluate.get("correct", 0), totals.evaluate.get("num-examples", 0))
            if ci:
                rows += [self.row("evaluate", "accuracy-ci-low", ci[0]), self.row("evaluate", "accuracy-ci-high", ci[1])]
        return rows


FAMILY = Basics()
