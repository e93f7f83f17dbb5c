"""PGD (Madry et al., 2018): projected gradient ascent from a random start, with restarts."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int
from .iterative import iterate
from .losses import goal_reached
from .ops import normalize, random_in_ball


class PGD(Attack):
    """Linf or L2 PGD; each restart attacks only samples not yet fooled.

    Per sample the worst case over restarts is kept: any successful point, else
    the one with the highest loss. ``alpha`` defaults to 2.5 * eps / steps.
    """

    name = "pgd"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10,
                 alpha: float | None = None, restarts: int = 1, random_start: bool = True,
                 seed: int = 0, early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.alpha = 2.5 * self.threat.eps / self.steps if alpha is None else non_negative("alpha", alpha)
        self.random_start = bool(random_start)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        norm, eps = self.threat.norm, self.threat.eps
        best_x, best_pred = x.clone(), y.clone()
        best_obj = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        idx = torch.arange(x.shape[0], device=x.device)
        queries = 0
        for _ in range(self.restarts):
            xs, ys = x[idx], y[idx]
            ts = target[idx] if target is not None else None
            start = random_in_ball(xs, norm, eps, gen) if self.random_start else xs
            out = iterate(model, xs, ys, ts, start, norm=norm, eps=eps, steps=self.steps,
                          alpha=self.alpha, direction=lambda g, _: normalize(g, norm),
                          early_stop=self.early_stop)
            queries += out.queries
            won = goal_reached(out.pred, ys, ts)
            better = won | (out.objective > best_obj[idx])
            sel = idx[better]
            best_x[sel], best_pred[sel], best_obj[sel] = (
                out.x_adv[better], out.pred[better], out.objective[better])
            idx = idx[~won]
            if idx.numel() == 0:
                break
        return Run(best_x, best_pred, queries)
