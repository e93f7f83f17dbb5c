"""ASMA, Adaptive Segmentation Mask Attack (Ozbulak et al., MICCAI 2019), budget-constrained.

A targeted attack: the prediction is driven to a chosen mask. Each step raises, for every
class ``c`` of the target, the log-probability of ``c`` on the target-``c`` pixels the
model does not yet predict as ``c``; pixels already matching drop out (the adaptive mask).
The per-class terms are re-weighted every step by each class's share of the still
unmatched pixels, so effort follows what is left to change (the structure being erased or
moved) instead of the background, which matches almost everywhere from the start; this is
ASMA's summed per-pixel gradient written per class. ASMA's growing perturbation
multiplier is replaced by projected steps within an Linf or L2 budget.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationAttack
from .common import ascend, goal_score, onehot, predicted


def asma_objective(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample adaptively weighted target log-likelihood over still-unmatched pixels."""
    c = logits.shape[1]
    tgt1 = onehot(target, c).to(logits.dtype)  # (N, C, ...)
    unmatched = (predicted(logits.detach()) != target)[:, None].to(logits.dtype)
    todo = (tgt1 * unmatched).flatten(2).sum(2)  # (N, C) unmatched target pixels per class
    weight = todo / todo.sum(1, keepdim=True).clamp(min=1)
    logp = (F.log_softmax(logits, dim=1) * tgt1 * unmatched).flatten(2).sum(2)
    return (weight * logp / todo.clamp(min=1)).sum(1)


class ASMA(SegmentationAttack):
    """Drive the prediction towards the target mask (required); returns the best-IoU iterate.

    ASMA starts from ``x`` (no random start): the seed is not used.
    """

    name: ClassVar[str] = "asma"
    needs_target: ClassVar[bool] = True

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        assert target is not None  # perturb() refuses a call without one

        def done(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return (predicted(logits) == target[idx]).flatten(1).all(1)

        return ascend(model, x, x, lambda logits, idx: asma_objective(logits, target[idx]),
                      goal_score(target, True), eps=self.threat.eps, norm=self.threat.norm,
                      steps=self.steps, step_size=self.step_size, done=done)
