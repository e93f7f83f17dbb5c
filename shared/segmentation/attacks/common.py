"""What segmentation attacks share: input checks, exact projection, scores, the ascent loop.

All helpers are batched over the first dimension and work for (N, C, H, W) and
(N, C, D, H, W) inputs with (N, H, W) / (N, D, H, W) label maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.utils import one_hot
from torch import nn

from ...attacks.base import NORMS, attack_mode  # noqa: F401 - one attack mode and norm list for all attacks
from ..metrics import label_iou

# Relative slack before an L2 perturbation is rescaled, so re-projecting is a no-op.
L2_SLACK = 1e-6


def check_dense_batch(
    x: torch.Tensor, y_mask: torch.Tensor, target_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate a batch and its label maps; returns detached x and long masks.

    ``x`` is (N, C, H, W) or (N, C, D, H, W) in [0, 1]; ``y_mask`` and ``target_mask`` are
    (N, H, W) or (N, D, H, W). The budget is checked where the attack is made (its threat model).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() not in (4, 5):
        raise ValueError("x: expected float (N, C, H, W) or (N, C, D, H, W)")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("x: inputs must lie in [0, 1]")
    if tuple(y_mask.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"y_mask: shape {tuple(y_mask.shape)} does not match x {tuple(x.shape)}")
    if target_mask is not None and tuple(target_mask.shape) != tuple(y_mask.shape):
        raise ValueError(f"target_mask: shape {tuple(target_mask.shape)} != y_mask {tuple(y_mask.shape)}")
    # tensors made under inference_mode cannot take part in autograd: copy them out
    x = x.detach().clone() if x.is_inference() else x.detach()
    y = y_mask.to(x.device).long()
    y = y.clone() if y.is_inference() else y
    tgt = None if target_mask is None else target_mask.to(x.device).long()
    tgt = tgt.clone() if tgt is not None and tgt.is_inference() else tgt
    return x, y, tgt


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Nearest point of the ``norm`` ball around ``x`` (radial for L2), then clipped to [0, 1].

    Clipping after an L2 rescale only shrinks the perturbation, so the result is feasible.
    """
    if norm == "linf":
        return torch.minimum(torch.maximum(x_adv, (x - eps).clamp(min=0.0)), (x + eps).clamp(max=1.0))
    delta = x_adv - x
    n = delta.flatten(1).norm(dim=1)
    scale = torch.where(n > eps * (1 + L2_SLACK), eps / n.clamp(min=1e-30), torch.ones_like(n))
    return (x + delta * _view(scale, x)).clamp(0.0, 1.0)


def steepest(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-norm steepest-ascent direction: sign(g) for Linf, g / ||g||_2 for L2."""
    if norm == "linf":
        return g.sign()
    return g / _view(g.flatten(1).norm(dim=1).clamp(min=1e-12), g)


def random_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random point of the ball (Linf) or a random direction and radius (L2)."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return project(x, x + (2 * u - 1) * eps, norm, eps)
    d = steepest(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype), "l2")
    r = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
    return project(x, x + d * _view(r, x) * eps, norm, eps)


def generator(x: torch.Tensor, seed: int) -> torch.Generator:
    return torch.Generator(device=x.device).manual_seed(int(seed))


# --- per-sample losses and scores -------------------------------------------------------------

#: (logits of the samples ``idx`` of the batch, idx) -> per-sample value to maximise
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: (logits, idx) -> per-sample bool: this sample has reached its goal and stops moving
Done = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return one_hot(labels[:, None], num_classes, dim=1)


def dice_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample DiceCE (MONAI DiceLoss + cross-entropy), (N,): the loss the model trained on."""
    dice = DiceLoss(to_onehot_y=True, softmax=True, reduction="none")(logits, labels[:, None])
    ce = F.cross_entropy(logits, labels, reduction="none").flatten(1).mean(1)
    return dice.flatten(1).mean(1) + ce


def voxel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean voxel cross-entropy (N,)."""
    return F.cross_entropy(logits, labels, reduction="none").flatten(1).mean(1)


def voxel_dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean voxel DLR loss (N,): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)."""
    srt = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    top, second = srt[:, 0], srt[:, 1]
    other = torch.where(top == z_y, second, top)
    third = srt[:, min(2, logits.shape[1] - 1)]
    return (-(z_y - other) / (top - third + 1e-12)).flatten(1).mean(1)


def predicted(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over classes; ``max(1).indices`` is ~10x faster than ``argmax(1)`` on CPU here."""
    return logits.max(1).indices


def hard_dice(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean foreground Dice of the argmax prediction, (N,); absent-in-both counts 1.

    Vectorised by hand (not MONAI's per-sample loop): it scores every iterate of every
    attack, so it must cost far less than a forward pass. Reported metrics use MONAI.
    """
    pred = predicted(logits)
    scores = []
    for k in range(1, logits.shape[1]):
        p, t = (pred == k).flatten(1), (labels == k).flatten(1)
        total = (p.sum(1) + t.sum(1)).float()
        inter = (p & t).sum(1).float()
        scores.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)))
    return torch.stack(scores, 1).mean(1)


def hard_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample foreground-union IoU of the argmax prediction with ``labels``, (N,)."""
    return label_iou(predicted(logits), labels)


def goal_score(labels: torch.Tensor, targeted: bool) -> Objective:
    """How far an attack got, per sample (higher is better for the attacker)."""
    if targeted:
        return lambda logits, idx: hard_iou(logits, labels[idx])
    return lambda logits, idx: -hard_dice(logits, labels[idx])


# --- the shared projected ascent ---------------------------------------------------------------


def ascend(
    model: nn.Module,
    x: torch.Tensor,
    start: torch.Tensor,
    objective: Objective,
    score: Objective,
    *,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    done: Done | None = None,
) -> torch.Tensor:
    """Projected steepest ascent of ``objective``; returns, per sample, the best iterate by ``score``.

    ``objective`` and ``score`` see the logits of the samples still moving and their
    indices ``idx`` in the batch (to pick their labels).
    Logits of the gradient pass score the current iterate for free, so keeping the best
    point costs one extra forward pass (for the last iterate). Samples for which ``done``
    holds stop moving (e.g. DAG once every pixel flipped). Runs inside :func:`attack_mode`
    (as every :class:`~.base.SegmentationAttack` does).
    """
    x_cur = project(x, start, norm, eps)
    best = x_cur.clone()
    best_score = torch.full((x.shape[0],), -math.inf, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xi = x_cur[idx].requires_grad_(True)
        logits = model(xi)
        (g,) = torch.autograd.grad(objective(logits, idx).sum(), xi)
        s = score(logits.detach(), idx)
        better = s > best_score[idx]
        best[idx[better]] = xi.detach()[better]
        best_score[idx[better]] = s[better]
        if done is not None:
            active[idx[done(logits.detach(), idx)]] = False
        moved = project(x[idx], xi.detach() + step_size * steepest(g, norm), norm, eps)
        x_cur[idx] = torch.where(_view(active[idx], moved), moved, x_cur[idx])
    idx = active.nonzero().squeeze(1)
    if idx.numel():
        with torch.no_grad():
            s = score(model(x_cur[idx]), idx)
        better = s > best_score[idx]
        best[idx[better]] = x_cur[idx][better]
    return project(x, best, norm, eps)
