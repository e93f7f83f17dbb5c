"""FMN (Pintor et al., 2021): fast minimum-norm attack, and robust-accuracy curves from it.

FMN takes normalised gradient steps on the logit margin inside an Lp ball whose
radius adapts: it shrinks while the iterate is adversarial and grows (or jumps
to a linear estimate of the boundary) while it is not. One run yields each
sample's smallest adversarial norm, hence robust accuracy at *every* epsilon —
far cheaper than one PGD per epsilon.

For Linf the step is ``alpha * eps_k * sign(grad)`` rather than the paper's
L2-normalised gradient: with the short budgets used for evaluation (tens of
steps on 28x28 images) an L2-normalised step overshoots small Linf balls and
the search stalls, while a step relative to the current radius behaves like PGD
at every radius. ``alpha`` is cosine-annealed from ``alpha_init`` to ``alpha_final``.

With ``epsilons`` given (``curve``) only the grid matters, so the search starts
at the largest epsilon and, each time an adversarial is found, the radius drops
to the largest grid value below its norm (instead of shrinking by ``gamma``); a
sample stops once it is adversarial within the smallest epsilon. This grid mode
is FMN's adaptive-radius scheme restricted to the grid: in effect a PGD that
walks down the epsilons, which is why one run can replace one PGD per epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .base import (
    Attack,
    AttackResult,
    Run,
    ThreatModel,
    attack_mode,
    check_batch,
    non_negative,
    positive_int,
    summarize,
)
from .losses import goal_reached, margin
from .ops import input_grad, norm_of, normalize, project, view_b, within

# Norms within this relative slack of a radius count as inside it: a point
# projected onto a ball can land an ulp outside it.
RTOL = 1e-5


class MinNorms(NamedTuple):
    norms: torch.Tensor  # per sample; inf where no adversarial was found
    x_adv: torch.Tensor  # the smallest adversarial found (the input where none)
    pred: torch.Tensor  # the model's prediction at x_adv
    queries: int


def fmn_core(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    *,
    norm: str,
    steps: int,
    alpha_init: float,
    alpha_final: float,
    gamma_init: float,
    gamma_final: float,
    stop_below: float = 0.0,
    grid: torch.Tensor | None = None,
) -> MinNorms:
    """Minimum-norm search; samples are dropped once their best norm is <= ``stop_below``
    (0: never, every sample runs every step)."""
    n = x.shape[0]
    dual_linf = norm == "linf"
    best_norm = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
    best_adv = x.clone()
    best_pred = y.clone()
    idx = torch.arange(n, device=x.device)
    xc, yc, tc = x, y, target
    delta = torch.zeros_like(x)
    # with a grid, only radii up to its largest value matter: start the search there
    eps_start = float("inf") if grid is None else float(grid.max())
    eps = torch.full((n,), eps_start, device=x.device, dtype=x.dtype)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    worst = norm_of(torch.maximum(x, 1 - x), norm)
    queries = 0

    def loss(z: torch.Tensor) -> torch.Tensor:  # ascend: > 0 once the goal is reached
        return -margin(z, yc) if tc is None else -margin(z, tc)

    for i in range(steps):
        cos = (1 + math.cos(math.pi * i / steps)) / 2
        alpha = alpha_final + (alpha_init - alpha_final) * cos
        gamma = gamma_final + (gamma_init - gamma_final) * cos
        xa = xc + delta
        g, z, obj = input_grad(model, xa, loss)
        queries += idx.numel()
        d_norm = norm_of(delta, norm)
        pred = z.argmax(1)
        adv = goal_reached(pred, yc, tc)
        better = adv & (d_norm < best_norm[idx])
        if better.any():
            j = idx[better]
            best_norm[j] = d_norm[better]
            best_adv[j] = xa[better]
            best_pred[j] = pred[better]
        found[idx] |= adv
        bn = best_norm[idx]
        if grid is not None:
            # largest grid radius strictly below the best norm (or 0 when none is)
            below = torch.where(grid[None] * (1 + RTOL) < bn[:, None], grid[None],
                                torch.zeros_like(grid[None]))
            shrink = below.amax(1)
            grow = eps
        else:
            shrink = torch.minimum(eps * (1 - gamma), bn)
            grow = eps * (1 + gamma)
        g_dual = g.flatten(1).abs().sum(1) if dual_linf else g.flatten(1).norm(dim=1)
        to_boundary = d_norm + obj.abs() / g_dual.clamp(min=1e-12)
        if grid is not None:
            to_boundary = eps  # stay at the largest grid radius until an adversarial appears
        eps = torch.where(adv, shrink, torch.where(found[idx], grow, to_boundary))
        eps = torch.minimum(eps, worst)

        done = within(bn, stop_below, RTOL)
        if done.any():
            keep = ~done
            idx, xc, yc, delta, g, eps, worst = idx[keep], xc[keep], yc[keep], delta[keep], g[keep], eps[keep], worst[keep]
            tc = tc[keep] if tc is not None else None
            if idx.numel() == 0:
                break
        if dual_linf:  # sign step scaled to the current radius (see module docstring)
            delta = delta + view_b(alpha * eps, g) * g.sign()
        else:
            delta = delta + alpha * normalize(g, "l2")
        delta = project(xc, xc + delta, norm, eps) - xc
    return MinNorms(best_norm, best_adv, best_pred, queries)


class FMN(Attack):
    """FMN (Linf or L2). As an :class:`Attack` it succeeds where its minimum norm is within ``eps``.

    Every sample runs all ``steps`` and keeps its smallest adversarial point; ``eps``
    (``inf`` allowed) does not cut the search short unless ``early_stop=True``.
    """

    name = "fmn"
    needs_finite_eps = False

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 100,
                 alpha_init: float | None = None, alpha_final: float | None = None,
                 gamma_init: float = 0.05, gamma_final: float = 0.001, seed: int = 0,
                 early_stop: bool = False) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        default_alpha = 0.5 if self.threat.norm == "linf" else 1.0
        self.alpha_init = default_alpha if alpha_init is None else non_negative("alpha_init", alpha_init)
        self.alpha_final = (self.alpha_init / (10 if self.threat.norm == "linf" else 100)
                            if alpha_final is None
                            else non_negative("alpha_final", alpha_final))
        self.gamma_init = non_negative("gamma_init", gamma_init)
        self.gamma_final = non_negative("gamma_final", gamma_final)

    def min_norms(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None, *, stop_below: float = 0.0,
                  grid: torch.Tensor | None = None) -> MinNorms:
        return fmn_core(model, x, y, target, norm=self.threat.norm, steps=self.steps,
                        alpha_init=self.alpha_init, alpha_final=self.alpha_final,
                        gamma_init=self.gamma_init, gamma_final=self.gamma_final,
                        stop_below=stop_below, grid=grid)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        res = self.min_norms(model, x, y, target,
                             stop_below=self.threat.eps if self.early_stop else 0.0)
        return Run(res.x_adv, res.pred, res.queries)

    def curve(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              epsilons: Sequence[float], *, clean_logits: torch.Tensor | None = None,
              ) -> dict[float, AttackResult]:
        """Robust accuracy (as :class:`AttackResult` counts) at every epsilon from one FMN run."""
        x, y = check_batch(x, y)
        eps_list = sorted(float(e) for e in epsilons)
        if not eps_list or eps_list[0] < 0:
            raise ValueError(f"epsilons: need non-negative values, got {list(epsilons)!r}")
        with attack_mode(model):
            if clean_logits is None:
                with torch.inference_mode():
                    clean_logits = model(x)
            clean_pred = clean_logits.detach().argmax(1).clone()
            target = self.targets(clean_logits, y)
            todo = clean_pred == y
            if target is not None:
                todo &= target != y
            ix = todo.nonzero().squeeze(1)
            norms = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
            best = x.clone()
            best_pred = clean_pred.clone()
            queries = 0
            if ix.numel():
                grid = torch.tensor(eps_list, device=x.device, dtype=x.dtype)
                res = self.min_norms(model, x[ix], y[ix], None if target is None else target[ix],
                                     stop_below=eps_list[0], grid=grid)
                norms[ix], best[ix], best_pred[ix], queries = res.norms, res.x_adv, res.pred, res.queries
            out: dict[float, AttackResult] = {}
            for e in eps_list:
                ok = norms <= e * (1 + RTOL)
                x_adv = torch.where(view_b(ok, x), project(x, best, self.threat.norm, e), x)
                adv_pred = torch.where(ok, best_pred, clean_pred)
                stale = ok & (x_adv != best).flatten(1).any(1)
                if stale.any():  # rounding moved a point: re-evaluate it
                    with torch.inference_mode():
                        adv_pred[stale] = model(x_adv[stale]).argmax(1)
                out[e] = summarize(x, x_adv, y, clean_pred, adv_pred, target, queries)
        return out


def robust_accuracy_curve(
    min_norms: torch.Tensor, clean_correct: torch.Tensor, epsilons: Sequence[float]
) -> dict[float, int]:
    """Robust counts per epsilon from per-sample minimal adversarial norms.

    A sample is robust at ``eps`` if it is correctly classified and its smallest
    adversarial perturbation is larger than ``eps`` (``inf`` when none was found).
    """
    return {float(e): int((clean_correct & (min_norms > e)).sum()) for e in epsilons}
