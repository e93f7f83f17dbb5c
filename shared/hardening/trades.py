"""TRADES (Zhang et al., 2019): clean cross-entropy plus ``beta`` times the KL to the worst neighbour.

Separating accuracy (CE on clean inputs) from smoothness (KL) makes the
clean/robust trade-off one explicit knob, ``beta``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Hardening, _number, eval_logits, pgd_linf, weighted_mean


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p || q) between the softmaxes of two logit batches."""
    log_p, log_q = F.log_softmax(logits_p, 1), F.log_softmax(logits_q, 1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def kl_neighbour(model: nn.Module, x: torch.Tensor, clean_logits: torch.Tensor, *, eps: float,
                 alpha: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """The point of the Linf ball that maximises KL(p(x) || p(x')), from a tiny Gaussian start."""
    target = clean_logits.detach()
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * 1e-3
    start = (x + noise.to(x.device)).clamp(0, 1)
    return pgd_linf(model, x, lambda z, _: kl_rows(target, z), eps=eps, alpha=alpha,
                    steps=steps, gen=None, start=start)


class TRADES(Hardening):
    """Loss ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, x_adv from PGD on that KL."""

    name = "trades"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, alpha: float | None = None,
                 beta: float = 6.0) -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha)
        self.beta = _number("beta", beta)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
             x_unlabelled: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        clean0 = eval_logits(model, x)
        x_adv = kl_neighbour(model, x, clean0, eps=self.eps, alpha=self.alpha, steps=self.steps, gen=gen)
        logits = model(torch.cat([x, x_adv]))
        clean, adv = logits[: len(y)], logits[len(y):]
        loss = F.cross_entropy(clean, y, weight=weight) + self.beta * weighted_mean(kl_rows(clean, adv), y, weight)
        return loss, clean
