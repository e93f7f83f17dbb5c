"""What label-only (decision-based) attacks share: a counted label oracle and a query grid.

The survey asks for black-box attacks that need "only the output result of the
model ... even without the confidence rate". Such an attacker sees one predicted
label per query, so the question a hospital asks is how robust its model stays
*as the attacker's query budget grows*. :class:`LabelOracle` answers the model's
label and counts every query per sample; each time an attack holds a better
adversarial point it calls :meth:`LabelOracle.record`, which keeps the best
distance reached within every budget of the grid. One run thus yields robust
accuracy at 100, 500, 1000, ... queries, reported as counts
(``robust_at_q<budget>``: attacked samples with no adversarial within ``eps``
after that many queries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import require
from .losses import goal_reached
from .ops import norm_of

DEFAULT_BUDGETS: tuple[int, ...] = (100, 500, 1000, 5000)
ROWS_PER_QUERY_BATCH = 4096  # rows sent through the model at once (bounds memory for 3D inputs)


def check_budgets(budgets: Sequence[int], n_queries: int) -> tuple[int, ...]:
    """The sorted grid of query budgets, each in [1, ``n_queries``], with ``n_queries`` itself."""
    require(isinstance(budgets, (list, tuple)) and all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in budgets),
        "budgets", f"must be a list of integers >= 1, got {budgets!r}")
    require(all(b <= n_queries for b in budgets), "budgets",
            f"must not exceed n_queries={n_queries}, got {list(budgets)}")
    return tuple(sorted({*budgets, n_queries}))


class LabelOracle:
    """The model as a label-only oracle over a batch, with per-sample query counts.

    ``best`` holds each sample's smallest ``norm`` distance of an adversarial point
    found so far (``inf`` until one is found), ``best_x`` that point, and
    ``best_at[b]`` the smallest distance found with at most ``b`` queries.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 *, norm: str, eps: float, n_queries: int, budgets: Sequence[int], early_stop: bool) -> None:
        self.model, self.x, self.y, self.target = model, x, y, target
        self.norm, self.eps, self.n_queries, self.early_stop = norm, eps, n_queries, early_stop
        n = len(x)
        self.queries = torch.zeros(n, dtype=torch.long, device=x.device)
        self.best = torch.full((n,), math.inf, device=x.device)
        self.best_x = x.clone()
        self.best_at = {b: self.best.clone() for b in budgets}
        # a point built at radius eps can land a rounding error beyond it (values in [0, 1])
        self.slack = 4 * torch.finfo(x.dtype).eps

    def left(self) -> torch.Tensor:
        """Queries each sample may still spend."""
        return self.n_queries - self.queries

    def active(self) -> torch.Tensor:
        """Samples with budget left and (with early stop) no adversarial within ``eps`` yet."""
        keep = self.queries < self.n_queries
        if self.early_stop:
            keep &= self.best > self.eps + self.slack
        return keep

    def is_adversarial(self, xq: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Whether each row of ``xq`` (belonging to sample ``owner[i]``) reaches the goal; one
        query charged per row."""
        if len(xq) == 0:
            return torch.zeros(0, dtype=torch.bool, device=xq.device)
        self.queries.index_add_(0, owner, torch.ones_like(owner))
        with torch.no_grad():
            pred = torch.cat([self.model(chunk).argmax(1) for chunk in xq.split(ROWS_PER_QUERY_BATCH)])
        return goal_reached(pred, self.y[owner], None if self.target is None else self.target[owner])

    def record(self, idx: torch.Tensor, x_adv: torch.Tensor) -> None:
        """Adversarial points ``x_adv`` of samples ``idx``: keep each sample's closest, per budget too."""
        dist = norm_of(x_adv - self.x[idx], self.norm).to(self.best.dtype)
        better = dist < self.best[idx]
        self.best[idx[better]] = dist[better]
        self.best_x[idx[better]] = x_adv[better]
        for b, best in self.best_at.items():
            within = self.queries[idx] <= b
            best[idx[within]] = torch.minimum(best[idx[within]], dist[within])

    def extra(self) -> dict[str, int]:
        """Per budget, attacked samples still without an adversarial point within ``eps``."""
        return {f"robust_at_q{b}": int((best > self.eps + self.slack).sum()) for b, best in self.best_at.items()}
