"""RayS (Chen & Gu, KDD 2020): a label-only Linf attack by ray search over sign directions.

The Linf adversary's best perturbation lies on a ray ``x + r * s`` with ``s`` a
sign vector, so RayS searches directions, not points: for each direction the
smallest adversarial radius ``r`` is found by binary search on labels alone, and
the direction is refined hierarchically by flipping the signs of ever smaller
blocks of coordinates, keeping a flip when its radius is smaller. A flip that is
not adversarial at the current best radius costs one query, so most of the budget
goes to useful refinements. Early stop (default) ends a sample's search as soon
as its radius is within ``eps``; the query grid is reported as in :mod:`.decision`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, positive_int, require
from .decision import DEFAULT_BUDGETS, LabelOracle, check_budgets
from .ops import view_b


class RayS(Attack):
    """RayS with at most ``n_queries`` label queries per sample; binary search to ``tol`` (Linf)."""

    name = "rays"
    norms = ("linf",)

    def __init__(self, threat: ThreatModel | None = None, *, n_queries: int = 5000,
                 budgets: Sequence[int] = DEFAULT_BUDGETS, tol: float = 1e-4, seed: int = 0,
                 early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.n_queries = positive_int("n_queries", n_queries)
        self.budgets = check_budgets([b for b in budgets if b <= self.n_queries] if budgets is DEFAULT_BUDGETS
                                     else budgets, self.n_queries)
        require(isinstance(tol, (int, float)) and tol > 0, "tol", f"must be > 0, got {tol!r}")
        self.tol = float(tol)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        oracle = LabelOracle(model, x, y, target, norm="linf", eps=self.threat.eps, n_queries=self.n_queries,
                             budgets=self.budgets, early_stop=self.early_stop)
        n, dim = len(x), x[0].numel()
        signs = torch.where(torch.rand((n, dim), generator=gen, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
        radius = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        self._search(oracle, signs, signs, radius, torch.arange(n, device=x.device))
        level, block = 0, 0
        while True:
            idx = oracle.active().nonzero().squeeze(1)
            if not len(idx):
                break
            size = -(-dim // 2 ** level)
            start, end = block * size, min(dim, (block + 1) * size)
            attempt = signs[idx].clone()
            attempt[:, start:end] *= -1
            self._search(oracle, signs, attempt, radius, idx)
            block += 1
            if block == 2 ** level or end >= dim:
                level, block = level + 1, 0
                if size == 1:  # every single coordinate tried: start again from whole halves
                    level = 0
        return Run(oracle.best_x, None, int(oracle.queries.sum()), oracle.extra())

    def _ray(self, x: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return (x + view_b(r, x) * s.view_as(x)).clamp(0, 1)

    def _search(self, oracle: LabelOracle, signs: torch.Tensor, attempt: torch.Tensor,
                radius: torch.Tensor, idx: torch.Tensor) -> None:
        """Smallest adversarial radius along ``attempt`` for samples ``idx``; keep it where it beats
        their current ``radius`` (updating ``signs``, ``radius`` and the oracle's best point)."""
        x = oracle.x[idx]
        best = radius[idx]
        # one query at the current best radius (at most 1: the image's corner) decides whether to search
        hi = best.clamp(max=1.0)
        adv = oracle.is_adversarial(self._ray(x, attempt, hi), idx)
        sel = adv.nonzero().squeeze(1)
        lo = torch.zeros_like(hi)
        if self.early_stop:  # a radius within eps settles the sample: try eps first
            at_eps = torch.full_like(hi[sel], oracle.eps)
            try_eps = (hi[sel] > oracle.eps) & (oracle.left()[idx[sel]] > 0)
            if try_eps.any():
                j = sel[try_eps]
                ok = oracle.is_adversarial(self._ray(x[j], attempt[j], at_eps[try_eps]), idx[j])
                hi[j[ok]] = oracle.eps
                lo[j[~ok]] = oracle.eps
        while len(sel):
            sel = sel[((hi[sel] - lo[sel]) > self.tol) & (oracle.left()[idx[sel]] > 0)]
            if self.early_stop:
                sel = sel[hi[sel] > oracle.eps]
            if not len(sel):
                break
            mid = (lo[sel] + hi[sel]) / 2
            ok = oracle.is_adversarial(self._ray(x[sel], attempt[sel], mid), idx[sel])
            hi[sel[ok]], lo[sel[~ok]] = mid[ok], mid[~ok]
        better = adv & (hi < best)
        if better.any():
            i = idx[better]
            radius[i] = hi[better]
            signs[i] = attempt[better]
            oracle.record(i, self._ray(x[better], attempt[better], hi[better]))
