"""AutoAttack for segmentation (ROG, Daza et al. 2021): APGD-CE, APGD-DLR and Square, voxelwise.

ROG adapts AutoAttack's parameter-free attacks to segmentation: each loss is the
mean over voxels of a classification loss, so one attack lowers Dice everywhere at
once, and the robust Dice is the worst case per volume over all attacks (the
ensemble in :mod:`.ensemble`). APGD (Croce & Hein, 2020) needs no step-size tuning:
it starts at 2 * eps, adds momentum and halves the step at checkpoints where the
loss stopped rising; DLR (difference of logits ratio) is invariant to the scale of
the logits, so it still moves where cross-entropy saturates. Square needs only the
model's scores, which shows robustness that is not an artefact of masked gradients.
Every attack keeps, per sample, the iterate with the lowest hard Dice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks.square import p_schedule, window_mask
from .common import Objective, _view, attack_mode, check_inputs, generator, goal_score, project, steepest

RHO, MOMENTUM = 0.75, 0.75
SQUARE_QUERIES_PER_STEP = 20  # Square spends ``steps`` * this many queries (forward passes) per sample


def checkpoints(steps: int) -> list[int]:
    """APGD's step-size checkpoints, as the reference computes them in whole iterations: the
    first after 22% of ``steps``, then gaps shrinking by 3% of ``steps`` down to 6%."""
    gap, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = [0]
    while marks[-1] + gap <= steps:
        marks.append(marks[-1] + gap)
        gap = max(gap - shrink, least)
    return marks


def voxel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean voxel cross-entropy (N,)."""
    return F.cross_entropy(logits, labels, reduction="none").flatten(1).mean(1)


def voxel_dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean voxel DLR loss (N,): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)."""
    srt = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    top, second = srt[:, 0], srt[:, 1]
    other = torch.where(top == z_y, second, top)
    third = srt[:, min(2, logits.shape[1] - 1)]
    return (-(z_y - other) / (top - third + 1e-12)).flatten(1).mean(1)


def _apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int,
          loss: Objective, score: Objective, start: torch.Tensor) -> torch.Tensor:
    """APGD's momentum ascent with per-sample step halving; returns each sample's best iterate by ``score``."""
    n = len(x)
    marks = set(checkpoints(steps)[1:])
    with attack_mode(model):
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


def _apgd_attack(loss_fn, model, x, y_mask, eps, norm, steps, step_size, seed, target_mask):
    x, y, tgt, _ = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)
    labels = y if tgt is None else tgt
    sign = 1.0 if tgt is None else -1.0  # targeted: descend the loss towards the target

    def loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return sign * loss_fn(logits, labels[idx])

    return _apgd(model, x, y, eps, norm, steps, loss, goal_score(labels, tgt is not None), x)


def apgd_ce_attack(model: nn.Module, x: torch.Tensor, y_mask: torch.Tensor, eps: float, norm: str = "linf",
                   steps: int = 10, step_size: float | None = None, seed: int = 0,
                   target_mask: torch.Tensor | None = None) -> torch.Tensor:
    """APGD on the mean voxel cross-entropy (``step_size`` is ignored: APGD sets its own)."""
    return _apgd_attack(voxel_ce, model, x, y_mask, eps, norm, steps, step_size, seed, target_mask)


def apgd_dlr_attack(model: nn.Module, x: torch.Tensor, y_mask: torch.Tensor, eps: float, norm: str = "linf",
                    steps: int = 10, step_size: float | None = None, seed: int = 0,
                    target_mask: torch.Tensor | None = None) -> torch.Tensor:
    """APGD on the mean voxel DLR loss (``step_size`` is ignored: APGD sets its own)."""
    return _apgd_attack(voxel_dlr, model, x, y_mask, eps, norm, steps, step_size, seed, target_mask)


def square_attack(model: nn.Module, x: torch.Tensor, y_mask: torch.Tensor, eps: float, norm: str = "linf",
                  steps: int = 10, step_size: float | None = None, seed: int = 0,
                  target_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Linf Square on the mean voxel margin, ``steps * SQUARE_QUERIES_PER_STEP`` queries per sample.

    Starts from vertical stripes of +-eps (as the reference); each query redraws one
    random square (cube in 3D) per sample at +-eps per channel, kept if the loss rises.
    """
    x, y, tgt, _ = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)
    if norm != "linf":
        raise ValueError(f"norm: square supports 'linf' only, got {norm!r}")
    labels = y if tgt is None else tgt
    score = goal_score(labels, tgt is not None)
    n_queries = steps * SQUARE_QUERIES_PER_STEP
    gen = generator(x, seed)
    spatial = tuple(x.shape[2:])
    n, c = x.shape[:2]

    def evaluate(xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = model(xq)
        loss = voxel_dlr(logits, labels) if tgt is None else -voxel_ce(logits, labels)
        return loss, score(logits, torch.arange(n, device=x.device))

    with attack_mode(model):
        stripes = torch.where(torch.rand((n, c, *[1] * (len(spatial) - 1), spatial[-1]), generator=gen,
                                         device=x.device) < 0.5, -eps, eps).to(x.dtype)
        x_cur = project(x, x + stripes.expand_as(x), "linf", eps)
        f_cur, s_cur = evaluate(x_cur)
        best, best_score = x_cur.clone(), s_cur.clone()
        voxels = math.prod(spatial)
        for it in range(1, n_queries):
            p = p_schedule(0.8, it - 1, n_queries)
            size = max(1, min(min(spatial), round((p * voxels) ** (1 / len(spatial)))))
            corner = torch.stack([torch.randint(0, e - size + 1, (n,), generator=gen, device=x.device)
                                  for e in spatial], 1)
            mask = window_mask(corner, size, spatial)
            vals = torch.where(torch.rand((n, c, *[1] * len(spatial)), generator=gen, device=x.device) < 0.5,
                               -eps, eps).to(x.dtype)
            cand = project(x, torch.where(mask, x + vals, x_cur), "linf", eps)
            f_new, s_new = evaluate(cand)
            keep = f_new > f_cur
            x_cur[keep], f_cur[keep] = cand[keep], f_new[keep]
            better = s_new > best_score
            best[better], best_score[better] = cand[better], s_new[better]
    return project(x, best, "linf", eps)


def rog_attack(model: nn.Module, x: torch.Tensor, y_mask: torch.Tensor, eps: float, norm: str = "linf",
               steps: int = 10, step_size: float | None = None, seed: int = 0,
               target_mask: torch.Tensor | None = None) -> torch.Tensor:
    """APGD-CE, APGD-DLR and (Linf only) Square, keeping per sample the input with the lowest
    hard Dice (highest target IoU), as AutoAttack keeps per image the attack that fooled it."""
    x, y, tgt, _ = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)
    labels = y if tgt is None else tgt
    score = goal_score(labels, tgt is not None)
    attacks = [apgd_ce_attack, apgd_dlr_attack] + ([square_attack] if norm == "linf" else [])
    idx = torch.arange(len(x), device=x.device)
    best, best_score = x.clone(), torch.full((len(x),), -math.inf, device=x.device)
    for attack in attacks:
        cand = attack(model, x, y, eps, norm, steps, step_size, seed, tgt)
        with attack_mode(model), torch.no_grad():
            s = score(model(cand), idx)
        better = s > best_score
        best[better], best_score[better] = cand[better], s[better]
    return best
