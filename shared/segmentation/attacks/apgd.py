"""APGD for segmentation (ROG, Daza et al. 2021): AutoAttack's APGD-CE and APGD-DLR, voxelwise.

APGD (Croce & Hein, 2020) needs no step-size tuning: it starts at 2 * eps, adds momentum and
halves the step at checkpoints where the loss stopped rising. Each loss is the mean over
voxels of a classification loss, so one attack lowers Dice everywhere at once; DLR
(difference of logits ratio) is invariant to the scale of the logits, so it still moves where
cross-entropy saturates. Every attack keeps, per sample, the iterate with the lowest hard Dice.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from .base import SegmentationAttack
from .common import Objective, _view, goal_score, project, steepest, voxel_ce, voxel_dlr

RHO, MOMENTUM = 0.75, 0.75


def checkpoints(steps: int) -> list[int]:
    """APGD's step-size checkpoints, as the reference computes them in whole iterations: the
    first after 22% of ``steps``, then gaps shrinking by 3% of ``steps`` down to 6%."""
    gap, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = [0]
    while marks[-1] + gap <= steps:
        marks.append(marks[-1] + gap)
        gap = max(gap - shrink, least)
    return marks


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int,
          loss: Objective, score: Objective, start: torch.Tensor) -> torch.Tensor:
    """APGD's momentum ascent with per-sample step halving; returns each sample's best iterate by ``score``."""
    n = len(x)
    marks = set(checkpoints(steps)[1:])
    def grad(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xg = xc.clone().requires_grad_(True)
        logits = model(xg)
        values = loss(logits, torch.arange(n, device=x.device))
        (g,) = torch.autograd.grad(values.sum(), xg)
        return g, values.detach(), score(logits.detach(), torch.arange(n, device=x.device))

    eta = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_cur = project(x, start, norm, eps)
    g, f_cur, s_cur = grad(x_cur)
    best, best_score = x_cur.clone(), s_cur.clone()
    x_max, f_max = x_cur.clone(), f_cur.clone()
    x_prev = x_cur.clone()
    rises = torch.zeros(n, device=x.device)
    last_mark, f_max_at_mark, eta_at_mark = 0, f_max.clone(), eta.clone()
    for k in range(steps):
        z = project(x, x_cur + _view(eta, x) * steepest(g, norm), norm, eps)
        a = 1.0 if k == 0 else MOMENTUM
        x_new = project(x, x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), norm, eps)
        g_new, f_new, s_new = grad(x_new)
        rises += (f_new > f_cur).float()
        better = s_new > best_score
        best[better], best_score[better] = x_new[better], s_new[better]
        up = f_new > f_max
        x_max[up], f_max[up] = x_new[up], f_new[up]
        x_prev, x_cur, g, f_cur = x_cur, x_new, g_new, f_new
        if k + 1 in marks:
            stalled = (rises < RHO * (k + 1 - last_mark)) | ((eta == eta_at_mark) & (f_max == f_max_at_mark))
            eta_at_mark, f_max_at_mark = eta.clone(), f_max.clone()
            eta = torch.where(stalled, eta / 2, eta)
            if stalled.any():  # restart the halved samples from their best point
                x_cur[stalled] = x_max[stalled]
                g_r, f_r, _ = grad(x_max)
                g[stalled], f_cur[stalled] = g_r[stalled], f_r[stalled]
            rises.zero_()
            last_mark = k + 1
    return project(x, best, norm, eps)


class APGD(SegmentationAttack):
    """APGD on a per-sample voxelwise :meth:`loss` (``step_size`` is ignored: APGD sets its own)."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,) of ``logits`` against the label maps ``labels``."""

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        labels = y if target is None else target
        sign = 1.0 if target is None else -1.0  # targeted: descend the loss towards the target

        def loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return sign * self.loss(logits, labels[idx])

        return _apgd(model, x, y, self.threat.eps, self.threat.norm, self.steps, loss,
                     goal_score(labels, target is not None), x)


class APGDCE(APGD):
    """APGD on the mean voxel cross-entropy."""

    name: ClassVar[str] = "apgd-ce"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return voxel_ce(logits, labels)


class APGDDLR(APGD):
    """APGD on the mean voxel DLR loss."""

    name: ClassVar[str] = "apgd-dlr"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return voxel_dlr(logits, labels)
