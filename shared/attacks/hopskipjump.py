"""HopSkipJump (Chen, Jordan & Wainwright, 2020): a label-only attack, Linf and L2.

It needs nothing but the predicted label. From any adversarial starting point
(uniform noise), it repeats three steps: a binary search to the decision boundary,
a Monte-Carlo estimate of the boundary's normal from the labels of random
perturbations around that point, and a geometric step along the estimate
followed by a new binary search. The distance to the clean image shrinks with
every iteration; the attack minimises it until it is within ``eps`` (early stop)
or the query budget is spent. Robust accuracy at every budget of the query grid
comes from the same run (:mod:`.decision`). Parameters follow the paper and
ART's defaults (``gamma``, ``init_evals``, ``max_evals``); every sample keeps its
own step sizes and query count, and the whole batch is queried at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, positive_int, require
from .decision import DEFAULT_BUDGETS, LabelOracle, check_budgets
from .ops import norm_of, view_b

MAX_INIT_TRIES = 100  # uniform-noise draws per sample to find a first adversarial point
MAX_STEP_HALVINGS = 25


class HopSkipJump(Attack):
    """HopSkipJump with at most ``n_queries`` label queries per sample.

    ``budgets`` is the query grid reported as ``robust_at_q<b>``; ``n_queries`` is
    always on it. ``gamma`` sets the binary-search tolerance (theta = gamma / d^1.5
    for L2, gamma / d^2 for Linf, d the input size); the gradient estimate uses
    ``init_evals * sqrt(t)`` random directions at iteration t, at most ``max_evals``.
    """

    name = "hopskipjump"

    def __init__(self, threat: ThreatModel | None = None, *, n_queries: int = 5000,
                 budgets: Sequence[int] = DEFAULT_BUDGETS, gamma: float = 1.0, init_evals: int = 100,
                 max_evals: int = 10000, seed: int = 0, early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.n_queries = positive_int("n_queries", n_queries)
        self.budgets = check_budgets([b for b in budgets if b <= self.n_queries] if budgets is DEFAULT_BUDGETS
                                     else budgets, self.n_queries)
        require(isinstance(gamma, (int, float)) and gamma > 0, "gamma", f"must be > 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.init_evals = positive_int("init_evals", init_evals)
        self.max_evals = positive_int("max_evals", max_evals)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        norm = self.threat.norm
        oracle = LabelOracle(model, x, y, target, norm=norm, eps=self.threat.eps, n_queries=self.n_queries,
                             budgets=self.budgets, early_stop=self.early_stop)
        d = x[0].numel()
        theta = self.gamma / (d * math.sqrt(d)) if norm == "l2" else self.gamma / d ** 2
        idx, start = self._initialise(oracle, gen)
        if len(idx):
            boundary = self._binary_search(oracle, idx, start, theta)
            oracle.record(idx, boundary)
            x_b = x.clone()
            x_b[idx] = boundary
            t = 0
            while True:
                idx = idx[oracle.active()[idx]]
                if not len(idx):
                    break
                t += 1
                dist = norm_of(x_b[idx] - x[idx], norm)
                delta = (torch.full_like(dist, 0.1) if t == 1 else
                         (math.sqrt(d) if norm == "l2" else d) * theta * dist)
                k = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
                update = self._direction(oracle, idx, x_b[idx], delta, k, gen)
                idx, moved = self._step(oracle, idx, x_b[idx], update, dist / math.sqrt(t))
                if not len(idx):
                    continue
                x_b[idx] = self._binary_search(oracle, idx, moved, theta)
                oracle.record(idx, x_b[idx])
        return Run(oracle.best_x, None, int(oracle.queries.sum()), oracle.extra())

    def _initialise(self, oracle: LabelOracle, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform noise until adversarial, then a blend search towards the clean image."""
        x = oracle.x
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        start = x.clone()
        for _ in range(MAX_INIT_TRIES):
            todo = (~found & (oracle.left() > 0)).nonzero().squeeze(1)
            if not len(todo):
                break
            noise = torch.rand(x[todo].shape, generator=gen, device=x.device, dtype=x.dtype)
            adv = oracle.is_adversarial(noise, todo)
            start[todo[adv]] = noise[adv]
            found[todo[adv]] = True
        idx = found.nonzero().squeeze(1)
        lo = torch.zeros(len(idx), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        while True:  # blend (1 - a) x + a noise: a = hi is adversarial
            todo = ((hi - lo) > 1e-3) & (oracle.left()[idx] > 0)
            if not todo.any():
                break
            mid = (lo[todo] + hi[todo]) / 2
            i = idx[todo]
            adv = oracle.is_adversarial(x[i] + view_b(mid, x[i]) * (start[i] - x[i]), i)
            sel = todo.nonzero().squeeze(1)
            hi[sel[adv]], lo[sel[~adv]] = mid[adv], mid[~adv]
        return idx, x[idx] + view_b(hi, x[idx]) * (start[idx] - x[idx])

    def _binary_search(self, oracle: LabelOracle, idx: torch.Tensor, x_adv: torch.Tensor,
                       theta: float) -> torch.Tensor:
        """The point nearest the boundary between ``x`` and adversarial ``x_adv`` (still adversarial)."""
        x = oracle.x[idx]
        if self.threat.norm == "l2":
            hi, tol = torch.ones(len(idx), device=x.device, dtype=x.dtype), torch.full(
                (len(idx),), theta, device=x.device, dtype=x.dtype)

            def point(i: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
                return x[i] + view_b(a, x[i]) * (x_adv[i] - x[i])
        else:
            hi = norm_of(x_adv - x, "linf")
            tol = torch.clamp(hi * theta, max=theta)

            def point(i: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
                e = view_b(a, x[i])
                return torch.minimum(torch.maximum(x_adv[i], x[i] - e), x[i] + e)
        lo = torch.zeros_like(hi)
        while True:
            todo = ((hi - lo) > tol) & (oracle.left()[idx] > 0)
            if not todo.any():
                break
            sel = todo.nonzero().squeeze(1)
            mid = (lo[sel] + hi[sel]) / 2
            adv = oracle.is_adversarial(point(sel, mid), idx[sel])
            hi[sel[adv]], lo[sel[~adv]] = mid[adv], mid[~adv]
        return point(torch.arange(len(idx), device=x.device), hi)

    def _direction(self, oracle: LabelOracle, idx: torch.Tensor, x_b: torch.Tensor, delta: torch.Tensor,
                   k: int, gen: torch.Generator) -> torch.Tensor:
        """Monte-Carlo estimate of the boundary normal at ``x_b`` from up to ``k`` labels each."""
        n, shape = len(idx), x_b.shape[1:]
        k_i = torch.clamp(oracle.left()[idx], max=k)
        if self.threat.norm == "l2":
            u = torch.randn((n, k, *shape), generator=gen, device=x_b.device, dtype=x_b.dtype)
        else:
            u = torch.rand((n, k, *shape), generator=gen, device=x_b.device, dtype=x_b.dtype) * 2 - 1
        u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(n, k, *[1] * len(shape))
        dl = delta.view(n, 1, *[1] * len(shape))
        probe = (x_b[:, None] + dl * u).clamp(0, 1)
        u = (probe - x_b[:, None]) / dl
        valid = torch.arange(k, device=x_b.device)[None] < k_i[:, None]
        owner = idx[:, None].expand(n, k)[valid]
        phi = torch.zeros((n, k), device=x_b.device, dtype=x_b.dtype)
        phi[valid] = oracle.is_adversarial(probe[valid], owner).to(x_b.dtype) * 2 - 1
        counts = k_i.clamp_min(1).to(x_b.dtype)
        mean = phi.sum(1) / counts
        centred = torch.where(valid, phi - mean[:, None], torch.zeros_like(phi))
        all_same = mean.abs() == 1  # every probe on one side: step along (or against) their mean
        centred = torch.where(all_same[:, None] & valid, phi, centred)
        grad = (centred.view(n, k, *[1] * len(shape)) * u).sum(1) / view_b(counts, x_b)
        if self.threat.norm == "linf":
            return grad.sign()
        return grad / view_b(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)

    def _step(self, oracle: LabelOracle, idx: torch.Tensor, x_b: torch.Tensor, update: torch.Tensor,
              step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometric step search: halve each sample's step until the point is adversarial.

        Returns the samples that found one (with budget left) and their new points.
        """
        moved = x_b.clone()
        done = torch.zeros(len(idx), dtype=torch.bool, device=x_b.device)
        for _ in range(MAX_STEP_HALVINGS):
            todo = ~done & (oracle.left()[idx] > 0)
            if not todo.any():
                break
            sel = todo.nonzero().squeeze(1)
            cand = (x_b[sel] + view_b(step[sel], x_b[sel]) * update[sel]).clamp(0, 1)
            adv = oracle.is_adversarial(cand, idx[sel])
            moved[sel[adv]] = cand[adv]
            done[sel[adv]] = True
            step[sel[~adv]] /= 2
        return idx[done], moved[done]
