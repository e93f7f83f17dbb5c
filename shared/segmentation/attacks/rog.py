"""AutoAttack for segmentation (ROG, Daza et al. 2021): APGD-CE, APGD-DLR, FAB-T and Square, worst case.

ROG adapts AutoAttack's parameter-free attacks to segmentation (:mod:`.apgd`, :mod:`.fab`,
:mod:`.square`); the robust Dice is the worst case over all of them, as AutoAttack keeps per
image the attack that fooled it.

Which member's input a sample keeps must follow how Dice is scored. A 3D sample is a whole
volume, so its own lowest Dice is the worst case. 2D slices are pooled into their volume's
Dice (intersections and sizes add up over slices), and the slice-wise lowest Dice is not the
pooled lowest: a small slice's Dice drops from 1 to 0 by one voxel while another member
erases ten voxels of a large slice. Taking each slice's lowest Dice, adding FAB-T made ROG's
robust Dice *higher* (0.6538 to 0.6542 on the tests' held-out patients). For slices the
choice therefore minimises the batch's pooled Dice: Dinkelbach's iteration for a ratio
(per slice the member minimising ``2 I - d S``, with ``d`` the pooled Dice of the current
choice) started from the slice-wise choice, keeping the best pool seen, so it is never worse
than the slice-wise choice for the batch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from .apgd import APGDCE, APGDDLR
from .base import SegmentationAttack
from .common import goal_score, predicted
from .fab import FAB
from .square import Square

#: Dinkelbach iterations of the pooled choice (it settles in two or three on real slices)
POOL_ITERATIONS = 5


def overlap(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and foreground class, (N, K-1) each: the intersection of prediction and
    label, and the sum of their sizes (Dice = 2 I / S)."""
    pred = predicted(logits).flatten(1)
    lab = labels.flatten(1)
    inter = [((pred == k) & (lab == k)).sum(1) for k in range(1, logits.shape[1])]
    size = [(pred == k).sum(1) + (lab == k).sum(1) for k in range(1, logits.shape[1])]
    return torch.stack(inter, 1).float(), torch.stack(size, 1).float()


def pooled_dice(inter: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Mean foreground Dice of the samples pooled, as one volume (a class absent in both counts 1)."""
    i, s = inter.sum(0), size.sum(0)
    return torch.where(s > 0, 2 * i / s.clamp(min=1), torch.ones_like(s)).mean()


def pooled_choice(inter: torch.Tensor, size: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Per sample, the candidate (index into the first dimension of ``inter``/``size``, (A, N, K))
    that lowers the pooled Dice, from ``start`` by Dinkelbach's iteration; the best pool seen wins."""
    n = torch.arange(inter.shape[1], device=inter.device)
    choice = best = start
    best_dice = pooled_dice(inter[start, n], size[start, n])
    for _ in range(POOL_ITERATIONS):
        i, s = inter[choice, n], size[choice, n]
        d = torch.where(s.sum(0) > 0, 2 * i.sum(0) / s.sum(0).clamp(min=1), torch.ones_like(i[0]))
        weight = 1 / s.sum(0).clamp(min=1)  # each class's share of the mean Dice, linearised
        choice = ((2 * inter - d * size) * weight).sum(2).argmin(0)
        dice = pooled_dice(inter[choice, n], size[choice, n])
        if dice < best_dice:
            best, best_dice = choice, dice
    return best


class ROGAutoAttack(SegmentationAttack):
    """APGD-CE, APGD-DLR and (Linf only) FAB-T and Square; per sample the member's input with the
    lowest Dice (highest target IoU), pooled over a batch of 2D slices (see the module)."""

    name: ClassVar[str] = "rog"
    #: the members, in order; those that do not support the threat's norm are skipped
    parts: ClassVar[tuple[type[SegmentationAttack], ...]] = (APGDCE, APGDDLR, FAB, Square)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        labels = y if target is None else target
        score = goal_score(labels, target is not None)
        idx = torch.arange(len(x), device=x.device)
        cands, scores, inters, sizes = [], [], [], []
        for part in (p for p in self.parts if self.threat.norm in p.norms):
            attack = part(self.threat, steps=self.steps, step_size=self.step_size, seed=self.seed)
            cand = attack.perturb(model, x, y, target)
            with torch.no_grad():
                logits = model(cand)
            cands.append(cand)
            scores.append(score(logits, idx))
            if target is None and x.dim() == 4:
                i, s = overlap(logits, y)
                inters.append(i)
                sizes.append(s)
        choice = torch.stack(scores).nan_to_num(-math.inf).argmax(0)  # ties go to the earlier member
        if inters:
            choice = pooled_choice(torch.stack(inters), torch.stack(sizes), choice)
        return torch.stack(cands)[choice, idx]
