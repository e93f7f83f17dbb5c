"""AutoAttack for segmentation (ROG, Daza et al. 2021): APGD-CE, APGD-DLR and Square, worst case.

ROG adapts AutoAttack's parameter-free attacks to segmentation (:mod:`.apgd`, :mod:`.square`);
the robust Dice is the worst case per sample over all of them, as AutoAttack keeps per image
the attack that fooled it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from .apgd import APGDCE, APGDDLR
from .base import SegmentationAttack
from .common import goal_score
from .square import Square


class ROGAutoAttack(SegmentationAttack):
    """APGD-CE, APGD-DLR and (Linf only) Square, keeping per sample the input with the lowest
    hard Dice (highest target IoU)."""

    name: ClassVar[str] = "rog"

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        labels = y if target is None else target
        score = goal_score(labels, target is not None)
        parts = (APGDCE, APGDDLR) + ((Square,) if self.threat.norm == "linf" else ())
        idx = torch.arange(len(x), device=x.device)
        best, best_score = x.clone(), torch.full((len(x),), -math.inf, device=x.device)
        for part in parts:
            attack = part(self.threat, steps=self.steps, step_size=self.step_size, seed=self.seed)
            cand = attack.perturb(model, x, y, target)
            with torch.no_grad():
                s = score(model(cand), idx)
            better = s > best_score
            best[better], best_score[better] = cand[better], s[better]
        return best
