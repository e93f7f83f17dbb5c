"""MI-FGSM (Dong et al., 2018): iterative FGSM with a momentum of L1-normalised gradients."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int
from .iterative import iterate
from .ops import normalize, view_b


def momentum_direction(decay: float, norm: str):
    """Accumulate ``g / mean|g|`` into the state buffer; step along its sign (or L2 direction)."""

    def direction(g: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        (m,) = state
        l1 = g.flatten(1).abs().mean(1).clamp_(min=1e-12)
        m.mul_(decay).add_(g / view_b(l1, g))
        return normalize(m, norm)

    return direction


class MIFGSM(Attack):
    """Momentum stabilises the update direction, which helps transfer to other models."""

    name = "mifgsm"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10,
                 alpha: float | None = None, decay: float = 1.0, seed: int = 0,
                 early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.alpha = self.threat.eps / self.steps if alpha is None else non_negative("alpha", alpha)
        self.decay = non_negative("decay", decay)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        out = iterate(model, x, y, target, x, norm=self.threat.norm, eps=self.threat.eps,
                      steps=self.steps, alpha=self.alpha,
                      direction=momentum_direction(self.decay, self.threat.norm),
                      state=[torch.zeros_like(x)], early_stop=self.early_stop)
        return Run(out.x_adv, out.pred, out.queries)
