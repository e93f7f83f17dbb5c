"""One-pixel attack (Su et al., 2019): differential evolution over a few pixels' positions and values.

Black-box and extremely sparse (L0 = ``pixels``). The per-pixel change is also
bounded by the threat model's Linf ``eps`` (default 1: the classic unrestricted
attack). The evolution is batched: all samples' populations are evaluated in
one forward pass per generation, and a sample stops once it is fooled.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int, require
from .losses import goal_reached
from .ops import box


class OnePixel(Attack):
    """DE/rand/1 with ``popsize`` candidates per sample for ``generations`` generations."""

    name = "onepixel"
    default_threat = ThreatModel(norm="linf", eps=1.0)
    norms = ("linf",)

    def __init__(self, threat: ThreatModel | None = None, *, pixels: int = 1, popsize: int = 40,
                 generations: int = 30, mutation: float = 0.5, crossover: float = 1.0,
                 max_batch: int = 4096, seed: int = 0) -> None:
        super().__init__(threat, seed=seed)
        self.pixels = positive_int("pixels", pixels)
        self.popsize = positive_int("popsize", popsize)
        require(self.popsize >= 4, "popsize", f"differential evolution needs >= 4, got {popsize}")
        self.generations = positive_int("generations", generations)
        self.mutation = non_negative("mutation", mutation)
        self.crossover = non_negative("crossover", crossover)
        require(self.crossover <= 1, "crossover", f"must be in [0, 1], got {crossover}")
        self.max_batch = positive_int("max_batch", max_batch)

    def _images(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                cand: torch.Tensor) -> torch.Tensor:
        """Decode candidates (k, P, pixels * (dims + C)) into perturbed images (k * P, C, ...)."""
        k, p, _ = cand.shape
        c, *spatial = x.shape[1:]
        nd = len(spatial)
        genes = cand.view(k, p, self.pixels, nd + c)
        pos = torch.zeros(k, p, self.pixels, dtype=torch.long, device=x.device)
        for d, ext in enumerate(spatial):
            pos = pos * ext + (genes[..., d] * ext).long().clamp_(0, ext - 1)
        npix = math.prod(spatial)
        imgs = x[:, None].expand(k, p, *x.shape[1:]).reshape(k, p, c, npix).clone()
        lo_f = lo.reshape(k, 1, c, npix).expand(k, p, c, npix)
        hi_f = hi.reshape(k, 1, c, npix).expand(k, p, c, npix)
        index = pos[:, :, None, :].expand(k, p, c, self.pixels)
        lo_p, hi_p = lo_f.gather(3, index), hi_f.gather(3, index)
        vals = genes[..., nd:].permute(0, 1, 3, 2)  # (k, P, C, pixels)
        imgs.scatter_(3, index, lo_p + vals * (hi_p - lo_p))
        return imgs.view(k * p, c, *spatial)

    def _fitness(self, model: nn.Module, imgs: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower is better: true-class probability (or 1 - target probability)."""
        with torch.no_grad():
            probs = torch.cat([model(chunk).softmax(1) for chunk in imgs.split(self.max_batch)])
        probs = probs.view(-1, p, probs.shape[1])
        if target is None:
            fit = probs.gather(2, y[:, None, None].expand(-1, p, 1)).squeeze(2)
        else:
            fit = 1 - probs.gather(2, target[:, None, None].expand(-1, p, 1)).squeeze(2)
        return fit, probs.argmax(2)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        n = x.shape[0]
        p = self.popsize
        dims = self.pixels * (x.dim() - 2 + x.shape[1])
        dev, dt = x.device, x.dtype
        lo, hi = box(x, self.threat.eps)
        pop = torch.rand((n, p, dims), generator=gen, device=dev, dtype=dt)
        fit, pred = self._fitness(model, self._images(x, lo, hi, pop), y, target, p)
        queries = n * p
        out, pred_out = x.clone(), y.clone()
        idx = torch.arange(n, device=dev)
        xc, yc, tc, lc, hc = x, y, target, lo, hi

        def finish(done: torch.Tensor) -> None:
            """Write the best individual of finished samples to the output."""
            if not done.any():
                return
            b = fit[done].argmin(1)
            best = pop[done][torch.arange(b.numel(), device=dev), b][:, None]
            out[idx[done]] = self._images(xc[done], lc[done], hc[done], best)
            pred_out[idx[done]] = pred[done][torch.arange(b.numel(), device=dev), b]

        for g in range(self.generations + 1):
            won = goal_reached(pred, yc[:, None], None if tc is None else tc[:, None])
            fit = torch.where(won, fit - 2.0, fit)  # a fooling individual is always the best
            done = won.any(1) if g < self.generations else torch.ones_like(yc, dtype=torch.bool)
            finish(done)
            keep = ~done
            if not keep.any():
                break
            idx, xc, yc, lc, hc, pop, fit, pred = (
                idx[keep], xc[keep], yc[keep], lc[keep], hc[keep], pop[keep], fit[keep], pred[keep])
            tc = tc[keep] if tc is not None else None
            k = idx.numel()
            # three distinct partners per individual, all different from it
            others = torch.rand((k, p, p - 1), generator=gen, device=dev).argsort(2)[..., :3]
            self_i = torch.arange(p, device=dev)[None, :, None]
            others = others + (others >= self_i).long()
            bi = torch.arange(k, device=dev)[:, None, None]
            r = pop[bi, others]  # (k, P, 3, dims)
            mutant = (r[:, :, 0] + self.mutation * (r[:, :, 1] - r[:, :, 2])).clamp_(0.0, 1.0 - 1e-6)
            if self.crossover < 1:
                cross = torch.rand(mutant.shape, generator=gen, device=dev) < self.crossover
                mutant = torch.where(cross, mutant, pop)
            f_new, p_new = self._fitness(model, self._images(xc, lc, hc, mutant), yc, tc, p)
            queries += k * p
            better = f_new <= fit
            pop = torch.where(better[..., None], mutant, pop)
            fit = torch.where(better, f_new, fit)
            pred = torch.where(better, p_new, pred)
        return Run(out, pred_out, queries)
