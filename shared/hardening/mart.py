"""MART (Wang et al., 2020): misclassification-aware adversarial training.

Misclassified clean samples are where robustness is decided, so MART boosts
their KL term by ``1 - p_y(x)`` and uses a boosted CE that also pushes down the
strongest wrong class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Hardening, _number, pgd_linf, weighted_mean
from .trades import kl_rows


class MART(Hardening):
    """Loss ``BCE(f(x_adv), y) + beta * mean(KL(f(x) || f(x_adv)) * (1 - p_y(x)))``."""

    name = "mart"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, alpha: float | None = None,
                 beta: float = 6.0) -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha)
        self.beta = _number("beta", beta)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
             x_unlabelled: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = pgd_linf(model, x, lambda z, _: F.cross_entropy(z, y, reduction="none"),
                         eps=self.eps, alpha=self.alpha, steps=self.steps, gen=gen)
        logits = model(torch.cat([x, x_adv]))
        clean, adv = logits[: len(y)], logits[len(y):]
        p_adv = F.softmax(adv, 1)
        wrong = p_adv.scatter(1, y[:, None], float("-inf")).amax(1)  # strongest wrong class
        bce = F.cross_entropy(adv, y, weight=weight) - weighted_mean(torch.log((1.0 - wrong).clamp_min(1e-12)), y, weight)
        p_true = F.softmax(clean, 1).gather(1, y[:, None]).squeeze(1)
        loss = bce + self.beta * weighted_mean(kl_rows(clean, adv) * (1.0 - p_true), y, weight)
        return loss, adv
