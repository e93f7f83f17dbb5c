"""DAG, Dense Adversary Generation (Xie et al., ICCV 2017), within an Linf or L2 budget.

Every pixel gets an adversarial label (a cyclic shift of its true class, or the target
mask); each step raises ``Z_adv - Z_true`` summed over the pixels not yet flipped, so
pixels already fooled stop pulling the gradient and effort goes to the rest. A sample
stops once all its pixels are flipped. DAG's own step (gradient scaled by its Linf norm,
unbounded) is replaced by the steepest step of the threat norm, projected onto the budget.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ...attacks.base import ThreatModel
from .base import SegmentationAttack
from .common import ascend, goal_score, predicted


def adversarial_labels(y: torch.Tensor, num_classes: int, shift: int = 1) -> torch.Tensor:
    """Per-pixel adversarial label: the class ``shift`` places on (a permutation of classes)."""
    if shift % num_classes == 0:
        raise ValueError(f"shift: {shift} maps every class to itself for {num_classes} classes")
    return (y + shift) % num_classes


class DAG(SegmentationAttack):
    """DAG towards the target mask or, untargeted, towards ``(y + shift) % classes``.

    Deterministic (no random start): the seed is not used.
    """

    name: ClassVar[str] = "dag"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10, step_size: float | None = None,
                 seed: int = 0, shift: int = 1) -> None:
        super().__init__(threat, steps=steps, step_size=step_size, seed=seed)
        self.shift = int(shift)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        def adversarial(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return target[idx] if target is not None else adversarial_labels(y[idx], logits.shape[1], self.shift)

        def objective(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            adv, true = adversarial(logits, idx)[:, None], y[idx][:, None]
            live = (predicted(logits.detach())[:, None] != adv) & (adv != true)
            margin = logits.gather(1, adv) - logits.gather(1, true)
            return (margin * live).flatten(1).sum(1)

        def done(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            adv = adversarial(logits, idx)
            return ((predicted(logits) == adv) | (adv == y[idx])).flatten(1).all(1)

        score = goal_score(y if target is None else target, target is not None)
        return ascend(model, x, x, objective, score, eps=self.threat.eps, norm=self.threat.norm,
                      steps=self.steps, step_size=self.step_size, done=done)
