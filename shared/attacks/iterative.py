"""The projected-gradient loop shared by FGSM, BIM, PGD, MI-FGSM and TI-FGSM.

The attacks differ only in the start point and in how a gradient becomes a step
direction (sign, momentum, smoothing). The loop keeps a compact batch of the
samples still to fool: a sample whose goal is reached is written out and dropped,
so later steps cost less and its successful point is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .losses import ce_objective, goal_reached
from .ops import box, input_grad, project

Direction = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class IterOut(NamedTuple):
    x_adv: torch.Tensor
    pred: torch.Tensor
    objective: torch.Tensor
    queries: int


def iterate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    start: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    alpha: float,
    direction: Direction,
    state: list[torch.Tensor] | None = None,
    early_stop: bool = True,
    loss: LossFn = ce_objective,
) -> IterOut:
    """Run ``steps`` ascent steps of size ``alpha`` on ``loss`` from ``start``, projected.

    ``direction(grad, state)`` maps a gradient to a step direction and may update
    the per-sample ``state`` tensors in place (they are compacted with the batch).
    Returns the final points, the model's prediction there and the objective value.
    """
    n = x.shape[0]
    out = start.clone()
    pred_out = y.clone()
    obj_out = torch.zeros(n, device=x.device, dtype=x.dtype)
    idx = torch.arange(n, device=x.device)
    xa, xc, yc, tc = start.clone(), x, y, target
    st = list(state or [])
    lo, hi = box(x, eps) if norm == "linf" else (None, None)
    queries = 0

    for _ in range(steps):
        g, logits, obj = input_grad(model, xa, lambda z: loss(z, yc, tc))
        queries += idx.numel()
        if early_stop:
            pred = logits.argmax(1)
            done = goal_reached(pred, yc, tc)
            if done.any():
                out[idx[done]] = xa[done]
                pred_out[idx[done]] = pred[done]
                obj_out[idx[done]] = obj[done]
                keep = ~done
                idx, xa, xc, yc, g = idx[keep], xa[keep], xc[keep], yc[keep], g[keep]
                tc = tc[keep] if tc is not None else None
                if lo is not None:
                    lo, hi = lo[keep], hi[keep]
                st = [s[keep] for s in st]
                if idx.numel() == 0:
                    return IterOut(out, pred_out, obj_out, queries)
        step = direction(g, st).mul_(alpha)
        if norm == "linf":
            xa = torch.minimum(torch.maximum(xa.add_(step), lo), hi)
        else:
            xa = project(xc, xa + step, norm, eps)

    with torch.no_grad():
        logits = model(xa)
    queries += idx.numel()
    out[idx] = xa
    pred_out[idx] = logits.argmax(1)
    obj_out[idx] = loss(logits, yc, tc)
    return IterOut(out, pred_out, obj_out, queries)
