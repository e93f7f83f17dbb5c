"""DAG, Dense Adversary Generation (Xie et al., ICCV 2017), within an Linf or L2 budget.

Every pixel gets an adversarial label (a cyclic shift of its true class, or the target
mask); each step raises ``Z_adv - Z_true`` summed over the pixels not yet flipped, so
pixels already fooled stop pulling the gradient and effort goes to the rest. A sample
stops once all its pixels are flipped. DAG's own step (gradient scaled by its Linf norm,
unbounded) is replaced by the steepest step of the threat norm, projected onto the budget.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ascend, check_inputs, goal_score, predicted


def adversarial_labels(y: torch.Tensor, num_classes: int, shift: int = 1) -> torch.Tensor:
    """Per-pixel adversarial label: the class ``shift`` places on (a permutation of classes)."""
    if shift % num_classes == 0:
        raise ValueError(f"shift: {shift} maps every class to itself for {num_classes} classes")
    return (y + shift) % num_classes


def dag_attack(
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
    shift: int = 1,
) -> torch.Tensor:
    """DAG towards ``target_mask`` or, untargeted, towards ``(y + shift) % classes``.

    ``seed`` is accepted for the common interface; DAG is deterministic (no random start).
    """
    x, y, tgt, alpha = check_inputs(x, y_mask, eps, norm, steps, step_size, target_mask)

    def adversarial(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return tgt[idx] if tgt is not None else adversarial_labels(y[idx], logits.shape[1], shift)

    def objective(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        adv, true = adversarial(logits, idx)[:, None], y[idx][:, None]
        live = (predicted(logits.detach())[:, None] != adv) & (adv != true)
        margin = logits.gather(1, adv) - logits.gather(1, true)
        return (margin * live).flatten(1).sum(1)

    def done(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        adv = adversarial(logits, idx)
        return ((predicted(logits) == adv) | (adv == y[idx])).flatten(1).all(1)

    score = goal_score(y if tgt is None else tgt, tgt is not None)
    return ascend(model, x, x, objective, score, eps=eps, norm=norm, steps=steps,
                  step_size=alpha, done=done)
