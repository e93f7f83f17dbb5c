"""PGD adversarial training (Madry et al., 2018): train on the loss maximiser in the Linf ball.

``mix`` blends in the clean loss (Goodfellow et al.'s mixed objective), trading some
robustness for the clean accuracy a clinical model cannot afford to lose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Hardening, _number, pgd_linf, weighted_mean


class PGDAT(Hardening):
    """Loss ``(1 - mix) * CE(x_adv) + mix * CE(x)``, x_adv from PGD on the cross-entropy."""

    name = "pgd-at"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, alpha: float | None = None,
                 mix: float = 0.0) -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha)
        self.mix = _number("mix", mix, high=1.0)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
             x_unlabelled: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = pgd_linf(model, x, lambda z, _: F.cross_entropy(z, y, reduction="none"),
                         eps=self.eps, alpha=self.alpha, steps=self.steps, gen=gen)
        if self.mix == 0.0:
            logits = model(x_adv)
            return F.cross_entropy(logits, y, weight=weight), logits
        logits = model(torch.cat([x_adv, x]))
        adv, clean = logits[: len(y)], logits[len(y):]
        loss = (1 - self.mix) * F.cross_entropy(adv, y, weight=weight) + self.mix * F.cross_entropy(
            clean, y, weight=weight)
        return loss, adv
