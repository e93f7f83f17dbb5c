"""Square attack (Andriushchenko et al., 2020): score-based random search, Linf and L2.

Needs only the model's scores, so it checks that robustness is not an artefact
of masked gradients. Each query changes one random square (cube in 3D) of the
perturbation and is kept if the margin loss drops; the square shrinks on a fixed
schedule. Windows are drawn per sample, and fooled samples stop querying.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int, require
from .losses import goal_reached, margin
from .ops import project, view_b


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels changed per query, halved at fixed points of a 10k-query schedule."""
    it = int(it / n_queries * 10000)
    for bound, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32),
                       (500, 16), (200, 8), (50, 4), (10, 2)):
        if it > bound:
            return p_init / div
    return p_init


def window_mask(corner: torch.Tensor, size: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """Boolean (N, 1, *spatial) masks of a ``size``-wide window at per-sample ``corner`` (N, dims)."""
    n = corner.shape[0]
    mask = torch.ones((n, 1, *spatial), dtype=torch.bool, device=corner.device)
    for d, extent in enumerate(spatial):
        r = torch.arange(extent, device=corner.device)
        inside = (r[None] >= corner[:, d:d + 1]) & (r[None] < corner[:, d:d + 1] + size)
        shape = [n, 1] + [1] * len(spatial)
        shape[2 + d] = extent
        mask &= inside.view(shape)
    return mask


def pseudo_gaussian(size: int, ndim: int, device: torch.device, dtype: torch.dtype,
                    gen: torch.Generator) -> torch.Tensor:
    """Unit-L2 bump made of two opposite halves of nested squares (reference L2 Square)."""

    def rect(lengths: list[int]) -> torch.Tensor:
        grids = torch.meshgrid(*[torch.arange(n, device=device) for n in lengths], indexing="ij")
        # concentric boxes around the centre weigh 1/(k+1)^2: value = sum over k >= ring
        ring = torch.zeros(lengths, device=device, dtype=torch.long)
        for g, n in zip(grids, lengths):
            ring = torch.maximum(ring, (g - n // 2).abs())
        k_max = max(n // 2 + 1 for n in lengths)
        weights = torch.tensor([sum(1.0 / (k + 1) ** 2 for k in range(r, k_max))
                                for r in range(k_max + 1)], device=device, dtype=dtype)
        return weights[ring]

    half = size // 2
    first = [half] + [size] * (ndim - 1)
    second = [size - half] + [size] * (ndim - 1)
    delta = torch.cat([rect(first), -rect(second)], dim=0) if half > 0 else rect(second)
    delta = delta / delta.norm()
    if ndim >= 2 and torch.rand((), generator=gen, device=device) > 0.5:
        delta = delta.transpose(0, 1)
    return delta


def place(pattern: torch.Tensor, corner: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Paste a (s, ..., s) pattern into zero (N, 1, *spatial) maps at per-sample corners."""
    s = pattern.shape[0]
    n = corner.shape[0]
    index = []
    valid = torch.ones((n, *spatial), dtype=torch.bool, device=corner.device)
    for d, extent in enumerate(spatial):
        r = torch.arange(extent, device=corner.device)[None] - corner[:, d:d + 1]  # (N, extent)
        shape = [n] + [1] * len(spatial)
        shape[1 + d] = extent
        ok = ((r >= 0) & (r < s)).view(shape)
        valid = valid & ok
        index.append(r.clamp(0, s - 1).view(shape))
    vals = pattern[tuple(index)]
    return (vals * valid).unsqueeze(1)


class Square(Attack):
    """Square attack with ``n_queries`` per sample (including the initial query)."""

    name = "square"

    def __init__(self, threat: ThreatModel | None = None, *, n_queries: int = 5000,
                 p_init: float = 0.8, seed: int = 0) -> None:
        super().__init__(threat, seed=seed)
        self.n_queries = positive_int("n_queries", n_queries)
        self.p_init = non_negative("p_init", p_init)
        require(0 < self.p_init <= 1, "p_init", f"must be in (0, 1], got {p_init}")

    def _loss(self, model: nn.Module, xq: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = model(xq)
        m = margin(logits, y) if target is None else -margin(logits, target)
        return m, logits.argmax(1)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        if self.threat.norm == "linf":
            return self._linf(model, x, y, target, gen)
        return self._l2(model, x, y, target, gen)

    # -- Linf -------------------------------------------------------------------

    def _linf(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None, gen: torch.Generator) -> Run:
        eps = self.threat.eps
        n, c, *spatial = x.shape
        dev, dt = x.device, x.dtype
        # vertical stripes of +-eps: one value per channel and last-axis position
        stripes_shape = (n, c, *([1] * (len(spatial) - 1)), spatial[-1])
        signs = torch.randint(0, 2, stripes_shape, generator=gen, device=dev).to(dt) * 2 - 1
        x_best = project(x, x + eps * signs, "linf", eps)
        m_best, pred = self._loss(model, x_best, y, target)
        queries = n
        pred_best = pred
        idx = torch.arange(n, device=dev)
        active = ~goal_reached(pred, y, target)
        n_pix = math.prod(spatial)
        for it in range(1, self.n_queries):
            idx_a = idx[active]
            if idx_a.numel() == 0:
                break
            xa, xb = x[idx_a], x_best[idx_a]
            p = p_schedule(self.p_init, it, self.n_queries)
            s = max(int(round((p * n_pix) ** (1 / len(spatial)))), 1)
            s = min(s, min(spatial) - 1) if min(spatial) > 1 else 1
            k = idx_a.numel()
            corner = torch.stack([torch.randint(0, ext - s + 1, (k,), generator=gen, device=dev)
                                  for ext in spatial], 1)
            mask = window_mask(corner, s, tuple(spatial))
            vals = torch.randint(0, 2, (k, c, *([1] * len(spatial))), generator=gen,
                                 device=dev).to(dt) * 2 - 1
            cand = project(xa, torch.where(mask, xa + eps * vals, xb), "linf", eps)
            # resample windows that would not change anything (clipped at the box)
            same = ((cand - xb).abs() < 1e-7).logical_or(~mask).flatten(1).all(1)
            for _ in range(4):
                if not same.any():
                    break
                vals2 = torch.randint(0, 2, vals.shape, generator=gen, device=dev).to(dt) * 2 - 1
                cand2 = project(xa, torch.where(mask, xa + eps * vals2, xb), "linf", eps)
                cand = torch.where(view_b(same, cand), cand2, cand)
                same = same & ((cand - xb).abs() < 1e-7).logical_or(~mask).flatten(1).all(1)
            m, pr = self._loss(model, cand, y[idx_a], target[idx_a] if target is not None else None)
            queries += k
            better = m < m_best[idx_a]
            j = idx_a[better]
            x_best[j], m_best[j], pred_best[j] = cand[better], m[better], pr[better]
            tgt = target[idx_a] if target is not None else None
            active[idx_a] = ~goal_reached(pred_best[idx_a], y[idx_a], tgt)
        return Run(x_best, pred_best, queries)

    # -- L2 ---------------------------------------------------------------------

    def _l2(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None, gen: torch.Generator) -> Run:
        eps = self.threat.eps
        n, c, *spatial = x.shape
        nd = len(spatial)
        dev, dt = x.device, x.dtype
        # initial grid of bumps with random signs, rescaled to norm eps
        s0 = max(min(spatial) // 5, 1)
        delta = torch.zeros_like(x)
        grid = [range(0, ext - s0 + 1, s0) for ext in spatial]
        bump = pseudo_gaussian(s0, nd, dev, dt, gen)
        for corner_t in torch.cartesian_prod(*[torch.tensor(list(g), device=dev) for g in grid]).view(-1, nd):
            corner = corner_t[None].expand(n, nd)
            sgn = torch.randint(0, 2, (n, c, *([1] * nd)), generator=gen, device=dev).to(dt) * 2 - 1
            delta = delta + place(bump, corner, tuple(spatial)) * sgn
        delta = delta / view_b(delta.flatten(1).norm(dim=1).clamp(min=1e-12), delta) * eps
        x_best = project(x, x + delta, "l2", eps)
        m_best, pred = self._loss(model, x_best, y, target)
        pred_best = pred
        queries = n
        idx = torch.arange(n, device=dev)
        active = ~goal_reached(pred, y, target)
        n_pix = math.prod(spatial)
        sp_dims = tuple(range(2, 2 + nd))
        for it in range(1, self.n_queries):
            idx_a = idx[active]
            if idx_a.numel() == 0:
                break
            k = idx_a.numel()
            xa, xb = x[idx_a], x_best[idx_a]
            d = xb - xa
            p = p_schedule(self.p_init, it, self.n_queries)
            s = max(int(round((p * n_pix) ** (1 / nd))), 3)
            s += 1 - s % 2
            s = min(s, min(spatial) - 1)
            c1 = torch.stack([torch.randint(0, ext - s + 1, (k,), generator=gen, device=dev) for ext in spatial], 1)
            c2 = torch.stack([torch.randint(0, ext - s + 1, (k,), generator=gen, device=dev) for ext in spatial], 1)
            m1 = window_mask(c1, s, tuple(spatial)).to(dt)
            m2 = window_mask(c2, s, tuple(spatial)).to(dt)
            norm_win1 = ((d * m1) ** 2).sum(sp_dims, keepdim=True).sqrt()
            norm_img = d.flatten(1).norm(dim=1)
            norm_wins = ((d * torch.maximum(m1, m2)) ** 2).sum(sp_dims, keepdim=True).sqrt()
            bump = pseudo_gaussian(s, nd, dev, dt, gen)
            sgn = torch.randint(0, 2, (k, c, *([1] * nd)), generator=gen, device=dev).to(dt) * 2 - 1
            new = place(bump, c1, tuple(spatial)) * sgn + d * m1 / (norm_win1 + 1e-10)
            new_norm = ((new * m1) ** 2).sum(sp_dims, keepdim=True).sqrt().clamp(min=1e-12)
            budget = ((eps ** 2 - norm_img ** 2).clamp(min=0) / c)
            scale = (view_b(budget, new) + norm_wins ** 2).sqrt()
            d = d * (1 - m2)  # clear window 2
            d = d * (1 - m1) + new * m1 / new_norm * scale  # rewrite window 1
            d = d / view_b(d.flatten(1).norm(dim=1).clamp(min=1e-12), d) * eps
            cand = project(xa, xa + d, "l2", eps)
            tgt = target[idx_a] if target is not None else None
            m, pr = self._loss(model, cand, y[idx_a], tgt)
            queries += k
            better = m < m_best[idx_a]
            j = idx_a[better]
            x_best[j], m_best[j], pred_best[j] = cand[better], m[better], pr[better]
            active[idx_a] = ~goal_reached(pred_best[idx_a], y[idx_a], tgt)
        return Run(x_best, pred_best, queries)
