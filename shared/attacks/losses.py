"""Per-sample attack objectives, all oriented so that *larger* means closer to the goal."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_objective(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the true class (untargeted) or minus that of the target."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: positive while ``y`` is predicted."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


def margin_objective(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative C&W margin: >0 once the goal (misclassification / target) is reached."""
    if target is None:
        return -margin(logits, y)
    return -margin(logits, target)


def dlr_objective(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Difference-of-logits-ratio loss of Croce & Hein (2020), invariant to logit scale.

    The denominator needs the 3rd (4th when targeted) largest logit; with fewer
    classes it is undefined and the plain margin is used instead.
    """
    n_cls = logits.shape[1]
    srt = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        if n_cls < 3:
            return margin_objective(logits, y)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)
    if n_cls < 4:
        return margin_objective(logits, y, target)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


def goal_reached(
    pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Per-sample success: misclassified (untargeted) or predicted as ``target``."""
    return pred != y if target is None else pred == target
