"""The robust-Dice protocol: run every attack, keep per volume the worst Dice.

A volume is only as safe as the strongest attack on it, and different attacks win on
different patients; the per-volume minimum over the clean input and every attack (all in
the same threat model) is therefore a tighter robustness estimate than any single attack.
The clean input is a candidate because a zero perturbation is always in the budget, so the
robust Dice never exceeds the clean Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..metrics import VolumeScores, mean_dice, perturbation_norms, target_iou, volume_scores
from .common import attack_mode, predicted
from .registry import TARGETED, build_attack, get_attack


@dataclass
class AttackOutcome:
    """Per-volume results of one attack at one budget; kept at the site, reduced before sending."""

    name: str
    norm: str
    eps: float
    scores: VolumeScores
    linf: torch.Tensor
    l2: torch.Tensor
    target_iou: torch.Tensor | None = None


@dataclass
class RobustResult:
    """Per-volume worst-case Dice (V, C-1) and which candidate produced it (index into labels)."""

    dice: torch.Tensor
    worst: torch.Tensor
    labels: tuple[str, ...]
    outcomes: list[AttackOutcome]


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Argmax label maps in eval mode (the caller's train/eval state is restored)."""
    if len(x) == 0:
        return torch.zeros((0, *x.shape[2:]), dtype=torch.long, device=x.device)
    with attack_mode(model), torch.no_grad():
        return torch.cat([predicted(model(xb)) for xb in x.split(batch_size)])


def l2_radius(eps: float, x: torch.Tensor) -> float:
    """L2 budgets are given per voxel (RMS): radius = eps * sqrt(voxels per sample).

    One eps list then puts Linf and L2 attacks on a comparable scale for 2D slices and
    3D volumes alike (the Linf ball of radius eps lies inside this L2 ball).
    """
    return float(eps) * math.sqrt(x[0].numel()) if len(x) else float(eps)


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    volume_index: torch.Tensor,
    name: str,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    target_mask: torch.Tensor | None = None,
    num_classes: int = 3,
    batch_size: int = 64,
    hd95: bool = True,
) -> AttackOutcome:
    """Attack all samples in batches and score the result per volume.

    ``eps`` is taken as given for Linf and as a per-voxel RMS for L2 (see :func:`l2_radius`).
    A target mask is passed only to targeted attacks (:data:`TARGETED`).
    """
    get_attack(name)  # an unknown name fails here, even with no samples
    radius = l2_radius(eps, x) if norm == "l2" else float(eps)
    use_target = target_mask if name in TARGETED else None
    if name in TARGETED and target_mask is None:
        raise ValueError(f"target_mask: attack {name!r} needs a target mask")
    parts = []
    for i, start in enumerate(range(0, len(x), batch_size)):
        sl = slice(start, start + batch_size)
        tb = None if use_target is None else use_target[sl]
        attack = build_attack(name, eps=radius, norm=norm, steps=steps, step_size=step_size, seed=seed + i)
        parts.append(attack.perturb(model, x[sl], y[sl], tb))
    x_adv = torch.cat(parts) if parts else x.clone()
    pred = predict(model, x_adv, batch_size)
    linf, l2 = perturbation_norms(x, x_adv, volume_index)
    tiou = None if use_target is None else target_iou(pred, use_target, volume_index)
    scores = volume_scores(pred, y, volume_index, num_classes, hd95=hd95)
    return AttackOutcome(name, norm, float(eps), scores, linf, l2, tiou)


def worst_case(clean: VolumeScores, outcomes: Sequence[AttackOutcome]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per volume, the per-class Dice of the candidate (clean first) with the lowest mean Dice.

    One candidate is chosen per volume (an adversary sends one input), so the per-class
    values belong together; ties go to the earlier candidate.
    """
    cands = torch.stack([clean.dice, *[o.scores.dice for o in outcomes]])  # (A+1, V, K)
    means = torch.stack([mean_dice(c) for c in cands]).nan_to_num(math.inf)  # (A+1, V)
    worst = means.argmin(0)
    return cands[worst, torch.arange(cands.shape[1])], worst


def robust_dice(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    volume_index: torch.Tensor,
    attacks: Sequence[str],
    *,
    eps: float,
    norm: str = "linf",
    clean: VolumeScores | None = None,
    target_mask: torch.Tensor | None = None,
    num_classes: int = 3,
    hd95: bool = False,
    **attack_kwargs: object,
) -> RobustResult:
    """Run every attack in ``attacks`` at one budget and keep the worst Dice per volume."""
    if clean is None:
        clean = volume_scores(predict(model, x), y, volume_index, num_classes, hd95=False)
    outcomes = [
        run_attack(model, x, y, volume_index, a, eps=eps, norm=norm, target_mask=target_mask,
                   num_classes=num_classes, hd95=hd95, **attack_kwargs)  # type: ignore[arg-type]
        for a in attacks
    ]
    dice, worst = worst_case(clean, outcomes)
    return RobustResult(dice, worst, ("clean", *attacks), outcomes)
