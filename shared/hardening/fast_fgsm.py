"""Fast adversarial training (Wong et al., 2020): one FGSM step from a random start.

About as cheap as two clean passes, so a hospital with a CPU-only node can still
harden its model; the random start is what avoids FGSM training's catastrophic
overfitting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Hardening, pgd_linf


class FastFGSM(Hardening):
    """CE on x + delta, delta ~ U(-eps, eps) then one signed step of ``alpha`` (1.25 eps)."""

    name = "fast-fgsm"

    def __init__(self, *, eps: float = 8 / 255, alpha: float | None = None) -> None:
        super().__init__(eps=eps, steps=1, alpha=1.25 * eps if alpha is None else alpha)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
             x_unlabelled: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = pgd_linf(model, x, lambda z, _: F.cross_entropy(z, y, reduction="none"),
                         eps=self.eps, alpha=self.alpha, steps=1, gen=gen)
        logits = model(x_adv)
        return F.cross_entropy(logits, y, weight=weight), logits
