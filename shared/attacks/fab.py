"""FAB-T (Croce & Hein, 2020): targeted fast adaptive boundary attack, minimum norm.

Each step linearises the boundary between the true and the target class,
projects both the current iterate and the original input onto it (within the
[0, 1] box), and moves to a convex combination biased towards the original
input, which keeps the perturbation small. An adversarial iterate is pulled back
towards the input (``beta``) to search for a smaller one.

By default every sample runs every step against every target class and the
smallest adversarial point is kept (the reference minimum-norm behaviour);
``eps`` only decides what counts as a success (``inf``: any adversarial).
``early_stop=True`` (what the AutoAttack ensemble uses) drops a sample once it is
adversarial within a finite ``eps``: the same robust accuracy for less work.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int
from .ops import input_grad, norm_of, view_b, within

def hyperplane_projection(
    w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, norm: str
) -> torch.Tensor:
    """Smallest ``d`` (in ``norm``) with ``w . d = c`` and ``lo <= d <= hi``, per row (``lo <= 0 <= hi``).

    The minimiser has the form ``clip(t * sign(w), lo, hi)`` (Linf) or
    ``clip(t * w, lo, hi)`` (L2) for a scalar ``t`` >= 0 (after flipping ``w`` to
    make ``c`` positive). Coordinate ``i`` then contributes ``min(t * a_i, b_i)`` to
    ``w . d`` (``a_i`` = ``|w_i|`` or ``w_i**2``, ``b_i`` its contribution at the box
    bound), a concave piecewise-linear function of ``t``: sorting the breakpoints
    ``b_i / a_i`` finds the segment that reaches ``c`` and ``t`` exactly (the
    reference FAB's projection; one sort instead of a bisection over the whole row).
    When the hyperplane is out of reach the fully saturated step is returned.
    """
    s = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    ws = w * s[:, None]
    target = c.abs()
    direction = ws.sign() if norm == "linf" else ws
    a = direction * ws  # |w| (Linf) or w**2 (L2), >= 0
    bound = torch.where(ws > 0, hi, -lo)  # how far coordinate i can move towards the plane
    b = ws.abs() * bound
    tau = torch.where(a > 0, b / a.clamp(min=1e-30), torch.full_like(a, float("inf")))
    tau, order = tau.sort(dim=1)
    a_s, b_s = a.gather(1, order), b.gather(1, order)
    a_from = a_s.flip(1).cumsum(1).flip(1)  # sum of a over the coordinates not yet saturated at tau_k
    b_before = b_s.cumsum(1) - b_s  # sum of b over those saturated before tau_k
    finite = torch.isfinite(tau)
    reached = finite & (b_before + torch.where(finite, tau, 0.0) * a_from >= target[:, None])
    k = torch.where(reached.any(1), reached.float().argmax(1), (finite.sum(1) - 1).clamp(min=0))
    k = k[:, None]
    t = ((target[:, None] - b_before.gather(1, k)) / a_from.gather(1, k).clamp(min=1e-30)).squeeze(1)
    t_sat = torch.where(finite, tau, 0.0).amax(1)  # every coordinate at its bound
    t = torch.where(reached.any(1), t.clamp(min=0.0), t_sat)
    d = torch.minimum(torch.maximum(t[:, None] * direction, lo), hi)
    return d * s[:, None]


def fab_core(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor,
    x_init: torch.Tensor,
    best_norm: torch.Tensor,
    best_adv: torch.Tensor,
    *,
    norm: str,
    steps: int,
    eps: float,
    eta: float,
    beta: float,
    alpha_max: float,
    early_stop: bool = True,
) -> int:
    """One FAB-T run from ``x_init``; updates ``best_norm``/``best_adv`` in place. Returns queries.

    With ``early_stop``, samples whose best adversarial is already within a finite
    ``eps`` are dropped; without it every sample runs all steps, shrinking its norm
    further (the reference minimum-norm behaviour).
    """
    shape = x.shape
    idx = torch.arange(shape[0], device=x.device)
    x0 = x.flatten(1)
    x1 = x_init.flatten(1).clone()
    yc, tc = y, target
    queries = 0
    for _ in range(steps):
        g, _, df = input_grad(
            model, x1.view(-1, *shape[1:]),
            lambda z: z.gather(1, tc[:, None]).squeeze(1) - z.gather(1, yc[:, None]).squeeze(1),
        )
        w = g.flatten(1)
        both = hyperplane_projection(
            torch.cat([w, w]),
            torch.cat([-df, -(df + (w * (x0 - x1)).sum(1))]),
            torch.cat([-x1, -x0]),
            torch.cat([1 - x1, 1 - x0]),
            norm,
        )
        d1, d2 = both.chunk(2)
        a1 = norm_of(d1, norm).clamp(min=1e-8)
        a2 = norm_of(d2, norm).clamp(min=1e-8)
        alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
        x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp_(0.0, 1.0)
        with torch.no_grad():
            pred = model(x1.view(-1, *shape[1:])).argmax(1)
        queries += 2 * idx.numel()
        adv = pred != yc
        if adv.any():
            r = norm_of(x1 - x0, norm)
            better = adv & (r < best_norm[idx])
            j = idx[better]
            best_norm[j] = r[better]
            best_adv.view(shape[0], -1)[j] = x1[better]
            x1 = torch.where(adv[:, None], x0 + beta * (x1 - x0), x1)
        done = within(best_norm[idx], eps) if early_stop else None
        if done is not None and done.any():
            keep = ~done
            idx, x0, x1, yc, tc = idx[keep], x0[keep], x1[keep], yc[keep], tc[keep]
            if idx.numel() == 0:
                break
    return queries


class FAB(Attack):
    """FAB-T: targeted FAB against each of the ``n_target_classes`` most likely wrong classes.

    A minimum-norm attack: it succeeds when its smallest adversarial is within
    ``eps``; with ``eps=inf`` it just minimises the norm.
    """

    name = "fab"
    supports_targeted = False
    needs_finite_eps = False

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 9, eta: float = 1.05, beta: float = 0.9,
                 alpha_max: float = 0.1, seed: int = 0, early_stop: bool = False) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.restarts = positive_int("restarts", restarts)
        self.n_target_classes = positive_int("n_target_classes", n_target_classes)
        self.eta = non_negative("eta", eta)
        self.beta = non_negative("beta", beta)
        self.alpha_max = non_negative("alpha_max", alpha_max)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        norm, eps = self.threat.norm, self.threat.eps
        ranked = logits.argsort(dim=1, descending=True)
        best_norm = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        best_adv = x.clone()
        queries = 0
        for rank in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1):
            for restart in range(self.restarts):
                alive = (~within(best_norm, eps) if self.early_stop
                         else torch.ones_like(best_norm, dtype=torch.bool)).nonzero().squeeze(1)
                if alive.numel() == 0:
                    break
                xs = x[alive]
                if restart == 0:
                    start = xs
                else:
                    radius = torch.clamp(best_norm[alive], max=eps if eps < float("inf") else 1.0)
                    radius = torch.where(torch.isfinite(radius), radius, torch.ones_like(radius))
                    if norm == "linf":
                        t = 2 * torch.rand(xs.shape, generator=gen, device=x.device, dtype=x.dtype) - 1
                    else:
                        t = torch.randn(xs.shape, generator=gen, device=x.device, dtype=x.dtype)
                    t = t / view_b(norm_of(t, norm).clamp(min=1e-12), t)
                    start = (xs + 0.5 * view_b(radius, xs) * t).clamp(0.0, 1.0)
                bn, ba = best_norm[alive], best_adv[alive]
                queries += fab_core(model, xs, y[alive], ranked[alive, rank], start, bn, ba,
                                    norm=norm, steps=self.steps, eps=eps, eta=self.eta,
                                    beta=self.beta, alpha_max=self.alpha_max,
                                    early_stop=self.early_stop)
                best_norm[alive], best_adv[alive] = bn, ba
        return Run(best_adv, None, queries)
