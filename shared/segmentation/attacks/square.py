"""Square for segmentation (ROG, Daza et al. 2021): score-based random search, Linf, voxelwise.

Square needs only the model's scores, so it shows robustness that is not an artefact of
masked gradients. Each query redraws one random square (a cube in 3D) per sample at +-eps
per channel, kept if the mean voxel margin rises; per sample the iterate with the lowest
hard Dice is returned.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ...attacks.square import p_schedule, window_mask
from .base import SegmentationAttack
from .common import goal_score, project, voxel_ce, voxel_dlr

SQUARE_QUERIES_PER_STEP = 20  # Square spends ``steps`` * this many queries (forward passes) per sample


class Square(SegmentationAttack):
    """Linf Square on the mean voxel margin, ``steps * SQUARE_QUERIES_PER_STEP`` queries per sample.

    Starts from vertical stripes of +-eps (as the reference); ``step_size`` is not used.
    """

    name: ClassVar[str] = "square"
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        eps = self.threat.eps
        labels = y if target is None else target
        score = goal_score(labels, target is not None)
        n_queries = self.steps * SQUARE_QUERIES_PER_STEP
        spatial = tuple(x.shape[2:])
        n, c = x.shape[:2]

        def evaluate(xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                logits = model(xq)
            loss = voxel_dlr(logits, labels) if target is None else -voxel_ce(logits, labels)
            return loss, score(logits, torch.arange(n, device=x.device))

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
