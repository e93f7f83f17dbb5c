"""PGD (Madry et al., 2018) on the segmentation loss, Linf or L2, from a random start."""

from __future__ import annotations

import torch
from torch import nn

from .common import ascend, check_inputs, dice_ce, generator, goal_score, random_start


def pgd_attack(
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
    random_init: bool = True,
) -> torch.Tensor:
    """Maximise the per-sample DiceCE with ``y_mask`` (or minimise it with ``target_mask``).

    DiceCE is what the segmenter was trained on, so its gradient is the most direct route
    to a lower Dice. ``step_size`` defaults to 2.5 * eps / steps; per sample the iterate
    with the lowest Dice (highest target IoU) is returned.
    """
    x, y, tgt, alpha = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)
    if tgt is None:
        objective = lambda logits, idx: dice_ce(logits, y[idx])  # noqa: E731
    else:
        objective = lambda logits, idx: -dice_ce(logits, tgt[idx])  # noqa: E731
    start = random_start(x, norm, eps, generator(x, seed)) if random_init else x
    score = goal_score(y if tgt is None else tgt, tgt is not None)
    return ascend(model, x, start, objective, score, eps=eps, norm=norm, steps=steps, step_size=alpha)
