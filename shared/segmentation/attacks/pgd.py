"""PGD (Madry et al., 2018) on the segmentation loss, Linf or L2, from a random start."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ...attacks.base import ThreatModel
from .base import SegmentationAttack
from .common import ascend, dice_ce, goal_score, random_start


class PGD(SegmentationAttack):
    """Maximise a per-sample segmentation :meth:`loss` with ``y`` (or minimise it with the target).

    The loss is DiceCE, what the segmenter was trained on, so its gradient is the most direct
    route to a lower Dice; subclasses change only the loss (see :mod:`.multiscale`). Per
    sample the iterate with the lowest Dice (highest target IoU) is returned.
    """

    name: ClassVar[str] = "pgd"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10, step_size: float | None = None,
                 seed: int = 0, random_init: bool = True) -> None:
        super().__init__(threat, steps=steps, step_size=step_size, seed=seed)
        self.random_init = bool(random_init)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,) of ``logits`` against the label maps ``labels``."""
        return dice_ce(logits, labels)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        norm, eps = self.threat.norm, self.threat.eps
        if target is None:
            objective = lambda logits, idx: self.loss(logits, y[idx])  # noqa: E731
        else:
            objective = lambda logits, idx: -self.loss(logits, target[idx])  # noqa: E731
        start = random_start(x, norm, eps, gen) if self.random_init else x
        score = goal_score(y if target is None else target, target is not None)
        return ascend(model, x, start, objective, score, eps=eps, norm=norm, steps=self.steps,
                      step_size=self.step_size)
