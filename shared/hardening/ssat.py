"""Semi-supervised adversarial training (after Li et al.'s SSAT) for sites with few labels.

A hospital often holds many unlabelled scans and few labelled ones. Robustness
needs more data than accuracy does (Schmidt et al., 2018), and unlabelled data
supplies it: confident predictions become pseudo-labels trained adversarially,
and every unlabelled image adds a consistency term, KL(f(x_u) || f(x_u')), at its
worst neighbour x_u' in the Linf ball (as in TRADES, which needs no label).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .base import Hardening, _number, _require, eval_logits, pgd_linf
from .trades import kl_neighbour, kl_rows

TEACHERS = ("initial", "current")


class SSAT(Hardening):
    """Loss ``CE(f(x_adv), y) + weight * CE_pseudo(f(x_u'), y_u) + beta * KL(f(x_u) || f(x_u'))``.

    Pseudo-labels ``y_u`` are the teacher's predictions with confidence >= ``threshold``;
    the pseudo-label term averages over the whole unlabelled batch, so it fades
    out by itself when the teacher is unsure. ``teacher='initial'`` labels with a
    frozen copy of the model as training began (in a federation: the global
    model, which saw every site's labels; adversarial training makes the model
    itself too unsure to pseudo-label), ``'current'`` with the model being trained.
    """

    name = "ssat"
    needs_unlabelled = True

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, alpha: float | None = None,
                 threshold: float = 0.95, beta: float = 1.0, unlabelled_weight: float = 1.0,
                 teacher: str = "initial") -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha)
        self.threshold = _number("threshold", threshold, high=1.0)
        self.beta = _number("beta", beta)
        self.unlabelled_weight = _number("unlabelled_weight", unlabelled_weight)
        _require(teacher in TEACHERS, "teacher", f"must be one of {TEACHERS}, got {teacher!r}")
        self.teacher = teacher
        self._teacher: nn.Module | None = None
        self.reset()

    def begin(self, model: nn.Module) -> None:
        self._teacher = copy.deepcopy(model).eval() if self.teacher == "initial" else None

    def reset(self) -> None:
        self._seen, self._pseudo = 0, 0

    def counts(self) -> dict[str, int]:
        """Unlabelled images used and how many of them were confident enough for a pseudo-label."""
        return {"unlabelled-count": self._seen, "pseudo-labelled-count": self._pseudo}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
             x_unlabelled: torch.Tensor | None = None,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = pgd_linf(model, x, lambda z, _: F.cross_entropy(z, y, reduction="none"),
                         eps=self.eps, alpha=self.alpha, steps=self.steps, gen=gen)
        if x_unlabelled is None or len(x_unlabelled) == 0:
            logits = model(x_adv)
            return F.cross_entropy(logits, y, weight=weight), logits
        xu = x_unlabelled
        u0 = eval_logits(model, xu)
        conf, pseudo = F.softmax(eval_logits(self._teacher, xu) if self._teacher is not None else u0, 1).max(1)
        keep = (conf >= self.threshold).float()
        self._seen += len(xu)
        self._pseudo += int(keep.sum())
        xu_adv = kl_neighbour(model, xu, u0, eps=self.eps, alpha=self.alpha, steps=self.steps, gen=gen)
        logits = model(torch.cat([x_adv, xu, xu_adv]))
        adv, u_clean, u_adv = logits[: len(y)], logits[len(y): len(y) + len(xu)], logits[len(y) + len(xu):]
        # pseudo-labels are weighted like labels: a collapsed teacher must not dominate either
        w_u = keep if weight is None else keep * weight.to(keep.dtype)[pseudo]
        pseudo_ce = (F.cross_entropy(u_adv, pseudo, reduction="none") * w_u).mean()
        loss = (F.cross_entropy(adv, y, weight=weight) + self.unlabelled_weight * pseudo_ce
                + self.beta * kl_rows(u_clean, u_adv).mean())
        return loss, adv
