"""Backdoor (simulated threat): how often the trigger flips a test image to the target class.

Sites count triggered non-target test images (``backdoor.num-examples``) and those classified as the
target (``backdoor.hit-count``); rows ``attack-success-rate`` and the same model's ``main-accuracy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Family, Key, KeySet, RoundTotals

if TYPE_CHECKING:
    from .base import MetricValue


class Backdoor(Family):
    name = "backdoor"
    phases = ("backdoor",)
    qualifier = "attack"
    key_sets = (KeySet("backdoor", (
        Key(r"backdoor\.num-examples", "size", size="backdoor.num-examples"),
        Key(r"backdoor\.hit-count", "count", size="backdoor.num-examples"),
    ), lambda cfg, train: not train and cfg.threat == "backdoor", lambda cfg: 2),)
    ratios = {"backdoor-success": ("backdoor.hit-count", "backdoor.num-examples")}

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        evaluate = totals.evaluate or {}
        if "backdoor-success" not in evaluate:
            return []
        return [self.row("backdoor", "attack-success-rate", evaluate["backdoor-success"]),
                self.row("backdoor", "main-accuracy", evaluate.get("accuracy", float("nan")))]


FAMILY = Backdoor()
