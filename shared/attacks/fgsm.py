"""FGSM (Goodfellow et al., 2015): one signed-gradient step of the full budget."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel
from .iterative import iterate
from .ops import normalize


class FGSM(Attack):
    """Single step ``x + eps * sign(grad)`` (Linf) or ``x + eps * grad/||grad||`` (L2).

    The cheapest attack: a lower bound on what a gradient-based adversary achieves.
    """

    name = "fgsm"

    def __init__(self, threat: ThreatModel | None = None, *, seed: int = 0) -> None:
        super().__init__(threat, seed=seed, early_stop=False)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        norm, eps = self.threat.norm, self.threat.eps
        out = iterate(model, x, y, target, x, norm=norm, eps=eps, steps=1, alpha=eps,
                      direction=lambda g, _: normalize(g, norm), early_stop=False)
        return Run(out.x_adv, out.pred, out.queries)
