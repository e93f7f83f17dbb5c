"""APGD-CE and APGD-T (Croce & Hein, 2020): step-size-free PGD with momentum.

The step size starts at 2*eps and is halved at checkpoints when the loss stops
improving (too few increasing steps, or no new best since the last checkpoint);
the iterate then restarts from the best point. APGD-T runs the targeted DLR loss
against each of the top-k other classes in turn, attacking only survivors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int, require
from .iterative import IterOut
from .losses import ce_objective, dlr_objective, goal_reached
from .ops import box, input_grad, normalize, project, view_b

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce": ce_objective, "dlr": dlr_objective}


def checkpoints(steps: int) -> tuple[int, int, int]:
    """First checkpoint interval, its decrement and its floor (0.22, 0.03, 0.06 of ``steps``)."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def _start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Random start on the sphere of the ball, as in the reference implementation."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1
        t = t / view_b(t.flatten(1).abs().amax(1).clamp(min=1e-12), t)
    else:
        t = normalize(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype), "l2")
    return project(x, x + eps * t, norm, eps)


def apgd_core(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_target: torch.Tensor | None,
    goal_target: torch.Tensor | None,
    *,
    norm: str,
    eps: float,
    steps: int,
    loss: Callable[..., torch.Tensor],
    gen: torch.Generator,
    rho: float = 0.75,
    early_stop: bool = True,
) -> IterOut:
    """One APGD run. Returns a goal-reaching point where found, else the best-loss point."""
    n = x.shape[0]
    k, decr, k_min = checkpoints(steps)
    alpha_mom = 0.75

    def objective(z: torch.Tensor, yc: torch.Tensor, tc: torch.Tensor | None) -> torch.Tensor:
        return loss(z, yc, tc)

    out = x.clone()
    pred_out = y.clone()
    obj_out = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    idx = torch.arange(n, device=x.device)

    xc, yc, lt, gt = x, y, loss_target, goal_target
    lo, hi = box(x, eps) if norm == "linf" else (None, None)
    xa = _start(x, norm, eps, gen)
    g, logits, cur = input_grad(model, xa, lambda z: objective(z, yc, lt))
    queries = n
    pred = logits.argmax(1)
    x_best, g_best, loss_best, pred_best = xa.clone(), g.clone(), cur.clone(), pred.clone()
    x_prev = xa.clone()
    step = torch.full((n,), 2 * eps, device=x.device, dtype=x.dtype)
    loss_prev = cur.clone()
    n_incr = torch.zeros(n, device=x.device)
    best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
    counter = 0

    def proj(p: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return torch.minimum(torch.maximum(p, lo), hi)
        return project(xc, p, norm, eps)

    for i in range(steps + 1):
        won = goal_reached(pred, yc, gt)
        if won.any():
            w_idx = idx[won]
            newly = won & ~found[idx]
            out[idx[newly]] = xa[newly]
            pred_out[idx[newly]] = pred[newly]
            obj_out[idx[newly]] = cur[newly]
            found[w_idx] = True
            if early_stop:
                keep = ~won
                idx, xc, yc, xa, x_prev, g = idx[keep], xc[keep], yc[keep], xa[keep], x_prev[keep], g[keep]
                lt = lt[keep] if lt is not None else None
                gt = gt[keep] if gt is not None else None
                if lo is not None:
                    lo, hi = lo[keep], hi[keep]
                x_best, g_best, loss_best, pred_best = x_best[keep], g_best[keep], loss_best[keep], pred_best[keep]
                step, loss_prev, n_incr = step[keep], loss_prev[keep], n_incr[keep]
                best_at_check, reduced_at_check = best_at_check[keep], reduced_at_check[keep]
                if idx.numel() == 0:
                    break
        if i == steps:
            break
        a = alpha_mom if i > 0 else 1.0
        z = proj(xa + view_b(step, xa) * normalize(g, norm))
        x_new = proj(xa + a * (z - xa) + (1 - a) * (xa - x_prev))
        x_prev, xa = xa, x_new
        g, logits, cur = input_grad(model, xa, lambda zz: objective(zz, yc, lt))
        queries += idx.numel()
        pred = logits.argmax(1)

        n_incr += (cur > loss_prev).float()
        loss_prev = cur
        better = cur > loss_best
        if better.any():
            x_best[better], g_best[better] = xa[better], g[better]
            loss_best[better], pred_best[better] = cur[better], pred[better]

        counter += 1
        if counter == k:
            oscillating = n_incr <= k * rho
            stalled = ~reduced_at_check & (best_at_check >= loss_best)
            reduce = oscillating | stalled
            reduced_at_check = reduce
            best_at_check = loss_best.clone()
            if reduce.any():
                step[reduce] /= 2.0
                xa[reduce], g[reduce] = x_best[reduce], g_best[reduce]
                pred[reduce], cur[reduce] = pred_best[reduce], loss_best[reduce]
            counter = 0
            n_incr.zero_()
            k = max(k - decr, k_min)

    rest = ~found[idx]
    out[idx[rest]] = x_best[rest]
    pred_out[idx[rest]] = pred_best[rest]
    obj_out[idx[rest]] = loss_best[rest]
    return IterOut(out, pred_out, obj_out, queries)


def _restarts(
    run: Callable[[torch.Tensor], IterOut], x: torch.Tensor, y: torch.Tensor,
    goal_target: torch.Tensor | None, restarts: int,
) -> Run:
    """Repeat ``run`` on the samples not yet fooled; keep the worst case per sample."""
    best_x, best_pred = x.clone(), y.clone()
    best_obj = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    idx = torch.arange(x.shape[0], device=x.device)
    queries = 0
    for _ in range(restarts):
        res = run(idx)
        queries += res.queries
        gt = goal_target[idx] if goal_target is not None else None
        won = goal_reached(res.pred, y[idx], gt)
        better = won | (res.objective > best_obj[idx])
        sel = idx[better]
        best_x[sel], best_pred[sel], best_obj[sel] = res.x_adv[better], res.pred[better], res.objective[better]
        idx = idx[~won]
        if idx.numel() == 0:
            break
    return Run(best_x, best_pred, queries)


class APGD(Attack):
    """APGD with the cross-entropy (APGD-CE) or DLR loss; targeted threat models supported."""

    name = "apgd"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 100, restarts: int = 1,
                 loss: str = "ce", rho: float = 0.75, seed: int = 0, early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        require(loss in LOSSES, "loss", f"must be one of {sorted(LOSSES)}, got {loss!r}")
        self.loss = loss
        self.rho = non_negative("rho", rho)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        def run(idx: torch.Tensor) -> IterOut:
            t = target[idx] if target is not None else None
            return apgd_core(model, x[idx], y[idx], t, t, norm=self.threat.norm, eps=self.threat.eps,
                             steps=self.steps, loss=LOSSES[self.loss], gen=gen, rho=self.rho,
                             early_stop=self.early_stop)

        return _restarts(run, x, y, target, self.restarts)


class APGDT(Attack):
    """APGD-T: targeted DLR loss towards each of the ``n_target_classes`` most likely wrong classes.

    The goal stays untargeted (any misclassification), as in AutoAttack.
    """

    name = "apgdt"
    supports_targeted = False

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 9, rho: float = 0.75, seed: int = 0,
                 early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.n_target_classes = positive_int("n_target_classes", n_target_classes)
        self.rho = non_negative("rho", rho)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        ranked = logits.argsort(dim=1, descending=True)
        best_x, best_pred = x.clone(), y.clone()
        alive = torch.arange(x.shape[0], device=x.device)
        queries = 0
        for rank in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1):
            tgt = ranked[:, rank]

            def run(idx: torch.Tensor, a: torch.Tensor = alive, t: torch.Tensor = tgt) -> IterOut:
                j = a[idx]
                return apgd_core(model, x[j], y[j], t[j], None, norm=self.threat.norm,
                                 eps=self.threat.eps, steps=self.steps, loss=dlr_objective,
                                 gen=gen, rho=self.rho, early_stop=self.early_stop)

            res = _restarts(run, x[alive], y[alive], None, self.restarts)
            queries += res.queries
            won = res.pred != y[alive]
            # keep the last attempt for survivors, successes are final
            best_x[alive], best_pred[alive] = res.x_adv, res.pred
            alive = alive[~won]
            if alive.numel() == 0:
                break
        return Run(best_x, best_pred, queries)
