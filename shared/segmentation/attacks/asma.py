"""ASMA, Adaptive Segmentation Mask Attack (Ozbulak et al., MICCAI 2019), budget-constrained.

A targeted attack: the prediction is driven to a chosen mask. Each step raises, for every
class ``c`` of the target, the log-probability of ``c`` on the target-``c`` pixels the
model does not yet predict as ``c``; pixels already matching drop out (the adaptive mask).
The per-class terms are re-weighted every step by each class's share of the still
unmatched pixels, so effort follows what is left to change (the structure being erased or
moved) instead of the background, which matches almost everywhere from the start; this is
ASMA's summed per-pixel gradient written per class. ASMA's growing perturbation
multiplier is replaced by projected steps within an Linf or L2 budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import ascend, check_inputs, goal_score, onehot, predicted


def asma_objective(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample adaptively weighted target log-likelihood over still-unmatched pixels."""
    c = logits.shape[1]
    tgt1 = onehot(target, c).to(logits.dtype)  # (N, C, ...)
    unmatched = (predicted(logits.detach()) != target)[:, None].to(logits.dtype)
    todo = (tgt1 * unmatched).flatten(2).sum(2)  # (N, C) unmatched target pixels per class
    weight = todo / todo.sum(1, keepdim=True).clamp(min=1)
    logp = (F.log_softmax(logits, dim=1) * tgt1 * unmatched).flatten(2).sum(2)
    return (weight * logp / todo.clamp(min=1)).sum(1)


def asma_attack(
    model: nn.Module,
    x: torch.Tensor,
    y_mask: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    target_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drive the prediction towards ``target_mask`` (required); returns the best-IoU iterate.

    ``y_mask`` and ``seed`` are accepted for the common interface; ASMA starts from ``x``.
    """
    if target_mask is None:
        raise ValueError("target_mask: ASMA is a targeted attack and needs a target mask "
                         "(see fedaegis.shared.segmentation.attacks.targets)")
    x, _, tgt, alpha = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)
    assert tgt is not None

    def done(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (predicted(logits) == tgt[idx]).flatten(1).all(1)

    return ascend(model, x, x, lambda logits, idx: asma_objective(logits, tgt[idx]),
                  goal_score(tgt, True), eps=eps, norm=norm, steps=steps, step_size=alpha, done=done)
