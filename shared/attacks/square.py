"""Square attack (Andriushchenko et al., 2020): score-based random search, Linf and L2.

Needs only the model's scores, so it checks that robustness is not an artefact
of masked gradients. Each query changes one random square (cube in 3D) of the
perturbation and is kept if the margin loss drops; the square shrinks on a fixed
schedule. Windows are drawn per sample, and fooled samples stop querying
(unless ``early_stop=False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int, require
from .losses import goal_reached, margin
from .ops import box, project, view_b


Patch = tuple[torch.Tensor, torch.Tensor]  # flat indices into the batch, new values
Proposer = Callable[[int, list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, 'Patch | None']]


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
                 p_init: float = 0.8, seed: int = 0, early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
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

    def _p(self, it: int) -> float:
        """Square-size fraction of query ``it`` (1-based after the initial query): the
        reference's schedule at its 0-based iteration, so the first step uses ``p_init``."""
        return p_schedule(self.p_init, it - 1, self.n_queries)

    # -- shared random-search loop ------------------------------------------------

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None, x_init: torch.Tensor,
                propose: Proposer, aux: list[torch.Tensor]) -> Run:
        """Greedy random search from ``x_init``: one candidate per searched sample per query.

        ``propose(it, aux, x_best)`` returns candidates for the samples of the working set,
        and, when they differ from ``x_best`` only at some elements, those elements'
        flat indices and values (so accepting a candidate writes just those), else None.
        With early stopping (the reference behaviour) a fooled sample stops querying: the
        per-sample tensors ``aux`` (e.g. the input and its box) are compacted along with
        the current best points, so finished samples cost neither queries nor tensor work.
        Without it every sample spends the whole budget lowering its margin further (a
        maximum-confidence adversarial). Returns the best points and their predictions.
        """
        n = x.shape[0]
        x_best = x_init
        m_best, pred_best = self._loss(model, x_best, y, target)
        queries = n
        # working set: rows of the samples still searched (all of them without early stop)
        if self.early_stop:
            idx = (~goal_reached(pred_best, y, target)).nonzero().squeeze(1)
        else:
            idx = torch.arange(n, device=x.device)
        xb, mb, pb, yw = x_best[idx], m_best[idx], pred_best[idx], y[idx]
        tw = target[idx] if target is not None else None
        aux = [a[idx] for a in aux]
        for it in range(1, self.n_queries):
            k = idx.numel()
            if k == 0:
                break
            cand, patch = propose(it, aux, xb)
            m, pr = self._loss(model, cand, yw, tw)
            queries += k
            better = m < mb
            if self.early_stop:
                fooled = goal_reached(pr, yw, tw)
                better |= fooled
            if patch is None:
                xb = torch.where(view_b(better, xb), cand, xb)
            else:
                lin, vals = patch
                xb.put_(lin[better], vals[better])
            mb = torch.where(better, m, mb)
            pb = torch.where(better, pr, pb)
            if self.early_stop and fooled.any():
                j = fooled.nonzero().squeeze(1)
                x_best[idx[j]] = xb[j]
                pred_best[idx[j]] = pb[j]
                keep = (~fooled).nonzero().squeeze(1)
                idx, xb, mb, pb, yw = idx[keep], xb[keep], mb[keep], pb[keep], yw[keep]
                tw = tw[keep] if tw is not None else None
                aux = [a[keep] for a in aux]
        x_best[idx] = xb
        pred_best[idx] = pb
        return Run(x_best, pred_best, queries)

    # -- Linf -------------------------------------------------------------------

    def _linf(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None, gen: torch.Generator) -> Run:
        eps = self.threat.eps
        n, c, *spatial = x.shape
        nd = len(spatial)
        dev = x.device
        n_pix = math.prod(spatial)
        lo, hi = box(x, eps)  # every Linf Square point is, per element, one of these two
        # vertical stripes of +-eps: one sign per channel and last-axis position
        stripes = torch.randint(0, 2, (n, c, *([1] * (nd - 1)), spatial[-1]), generator=gen,
                                device=dev, dtype=torch.bool)
        x_init = torch.where(stripes, hi, lo)
        bit = torch.arange(min(c, 62), device=dev)[None]

        n_el = c * n_pix
        strides = [math.prod(spatial[d + 1:]) for d in range(nd)]
        chan_off = (torch.arange(c, device=dev) * n_pix).view(1, c, 1)

        def propose(it: int, aux: list[torch.Tensor], xb: torch.Tensor) -> tuple[torch.Tensor, Patch]:
            lo_w, hi_w = aux
            k = xb.shape[0]
            s = max(int(round((self._p(it) * n_pix) ** (1 / nd))), 1)
            s = min(s, min(spatial) - 1) if min(spatial) > 1 else 1
            # flat indices (k, c, s**nd) of each sample's window, at its own random corner
            ar = torch.arange(s, device=dev)
            off = torch.zeros((k, *([1] * nd)), dtype=torch.long, device=dev)
            for d, ext in enumerate(spatial):
                corner = torch.randint(0, ext - s + 1, (k,), generator=gen, device=dev)
                shape = [k] + [1] * nd
                shape[1 + d] = s
                off = off + ((corner[:, None] + ar) * strides[d]).view(shape)
            lin = off.view(k, 1, -1) + chan_off + (torch.arange(k, device=dev) * n_el).view(k, 1, 1)
            lo_p, hi_p = lo_w.take(lin), hi_w.take(lin)
            up = torch.randint(0, 2, (k, c, 1), generator=gen, device=dev, dtype=torch.bool)
            vals = torch.where(up, hi_p, lo_p)
            # A window that already holds the drawn signs (one per channel) would waste a
            # query; the reference redraws until something changes, i.e. draws uniformly
            # among the other sign patterns: XOR with a uniform non-zero pattern does it
            # in one step.
            same = (vals == xb.take(lin)).flatten(1).all(1)
            if eps > 0 and same.any():
                u = same.nonzero().squeeze(1)
                if c < 63:
                    code = torch.randint(1, 2 ** c, (u.numel(), 1), generator=gen, device=dev)
                    flip = ((code >> bit) & 1).bool().view(-1, c, 1)
                else:  # an all-zero pattern has probability 2**-c
                    flip = torch.randint(0, 2, (u.numel(), c, 1), generator=gen, device=dev,
                                         dtype=torch.bool)
                vals[u] = torch.where(up[u] ^ flip, hi_p[u], lo_p[u])
            cand = xb.clone()
            cand.put_(lin, vals)
            return cand, (lin, vals)

        return self._search(model, x, y, target, x_init, propose, [lo, hi])

    # -- L2 ---------------------------------------------------------------------

    def _l2(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None, gen: torch.Generator) -> Run:
        eps = self.threat.eps
        n, c, *spatial = x.shape
        nd = len(spatial)
        dev, dt = x.device, x.dtype
        sp = tuple(spatial)
        # initial grid of bumps with random signs, rescaled to norm eps
        s0 = max(min(spatial) // 5, 1)
        delta = torch.zeros_like(x)
        grid = [range(0, ext - s0 + 1, s0) for ext in spatial]
        bump = pseudo_gaussian(s0, nd, dev, dt, gen)
        for corner_t in torch.cartesian_prod(*[torch.tensor(list(g), device=dev) for g in grid]).view(-1, nd):
            corner = corner_t[None].expand(n, nd)
            sgn = torch.randint(0, 2, (n, c, *([1] * nd)), generator=gen, device=dev).to(dt) * 2 - 1
            delta = delta + place(bump, corner, sp) * sgn
        delta = delta / view_b(delta.flatten(1).norm(dim=1).clamp(min=1e-12), delta) * eps
        x_init = project(x, x + delta, "l2", eps)
        n_pix = math.prod(spatial)
        sp_dims = tuple(range(2, 2 + nd))

        def propose(it: int, aux: list[torch.Tensor], xb: torch.Tensor) -> tuple[torch.Tensor, None]:
            (xa,) = aux
            k = xa.shape[0]
            d = xb - xa
            s = max(int(round((self._p(it) * n_pix) ** (1 / nd))), 3)
            s += 1 - s % 2
            s = min(s, min(spatial) - 1)
            c1 = torch.stack([torch.randint(0, ext - s + 1, (k,), generator=gen, device=dev) for ext in spatial], 1)
            c2 = torch.stack([torch.randint(0, ext - s + 1, (k,), generator=gen, device=dev) for ext in spatial], 1)
            m1 = window_mask(c1, s, sp).to(dt)
            m2 = window_mask(c2, s, sp).to(dt)
            norm_win1 = ((d * m1) ** 2).sum(sp_dims, keepdim=True).sqrt()
            norm_img = d.flatten(1).norm(dim=1)
            norm_wins = ((d * torch.maximum(m1, m2)) ** 2).sum(sp_dims, keepdim=True).sqrt()
            bump = pseudo_gaussian(s, nd, dev, dt, gen)
            sgn = torch.randint(0, 2, (k, c, *([1] * nd)), generator=gen, device=dev).to(dt) * 2 - 1
            new = place(bump, c1, sp) * sgn + d * m1 / (norm_win1 + 1e-10)
            new_norm = ((new * m1) ** 2).sum(sp_dims, keepdim=True).sqrt().clamp(min=1e-12)
            budget = ((eps ** 2 - norm_img ** 2).clamp(min=0) / c)
            scale = (view_b(budget, new) + norm_wins ** 2).sqrt()
            d = d * (1 - m2)  # clear window 2
            d = d * (1 - m1) + new * m1 / new_norm * scale  # rewrite window 1
            d = d / view_b(d.flatten(1).norm(dim=1).clamp(min=1e-12), d) * eps
            return project(xa, xa + d, "l2", eps), None

        return self._search(model, x, y, target, x_init, propose, [x])
