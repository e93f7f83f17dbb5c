"""Multi-scale PGD: the segmentation loss at full, 1/2 and 1/4 resolution, summed.

In the spirit of Shao et al.'s multi-scale attacks on medical segmenters: coarse scales
reward perturbations that move whole regions (the structure's extent) rather than
boundary pixels only, which a full-resolution loss tends to favour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import ascend, check_inputs, generator, goal_score, onehot, random_start

DEFAULT_SCALES = (1, 2, 4)


def _pool(t: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return t
    pool = F.avg_pool2d if t.dim() == 4 else F.avg_pool3d
    return pool(t, factor, factor, ceil_mode=True)


def multiscale_loss(logits: torch.Tensor, labels: torch.Tensor, scales: Sequence[int] = DEFAULT_SCALES) -> torch.Tensor:
    """Per-sample sum over scales of cross-entropy between avg-pooled logits and label fractions."""
    soft = onehot(labels, logits.shape[1]).to(logits.dtype)
    total = logits.new_zeros(logits.shape[0])
    for s in scales:
        logp = F.log_softmax(_pool(logits, s), dim=1)
        total = total - (_pool(soft, s) * logp).sum(1).flatten(1).mean(1)
    return total


def multiscale_attack(
    model: nn.Module,
    x: torch.Tensor,
    y_mask: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    target_mask: torch.Tensor | None = None,
    *,
    scales: Sequence[int] = DEFAULT_SCALES,
) -> torch.Tensor:
    """PGD on :func:`multiscale_loss` (ascent from ``y_mask``, or descent to ``target_mask``)."""
    x, y, tgt, alpha = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)
    scales = tuple(int(s) for s in scales)
    if not scales or min(scales) < 1:
        raise ValueError(f"scales: need positive pooling factors, got {scales}")
    if tgt is None:
        objective = lambda logits, idx: multiscale_loss(logits, y[idx], scales)  # noqa: E731
    else:
        objective = lambda logits, idx: -multiscale_loss(logits, tgt[idx], scales)  # noqa: E731
    start = random_start(x, norm, eps, generator(x, seed))
    score = goal_score(y if tgt is None else tgt, tgt is not None)
    return ascend(model, x, start, objective, score, eps=eps, norm=norm, steps=steps, step_size=alpha)
