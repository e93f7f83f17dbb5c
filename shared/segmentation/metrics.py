"""Per-volume segmentation scores (MONAI) reduced to the sums and counts a site may report.

Scores are computed per volume (patient): in 2D the slices of a volume are stacked back in
order, so Dice and HD95 are those of the labelled slab, as in 3D. The per-volume tensors
stay at the site; only their sums and the number of finite values leave it, so the server's
sum/count is exactly the mean over all patients of the federation.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot


class VolumeScores(NamedTuple):
    """Per-volume, per-foreground-class scores, (V, C-1); NaN/inf where undefined."""

    dice: torch.Tensor
    hd95: torch.Tensor | None


def volumes(labels: torch.Tensor, volume_index: torch.Tensor) -> list[torch.Tensor]:
    """Label maps grouped into volumes, each (1, D, H, W): 2D slices are stacked in order."""
    n_vol = int(volume_index.max()) + 1 if volume_index.numel() else 0
    out = []
    for v in range(n_vol):
        part = labels[volume_index == v]
        out.append(part[None] if labels.dim() == 3 else part)  # (S,H,W) -> (1,S,H,W)
    return out


def _onehot(vol: torch.Tensor, num_classes: int) -> torch.Tensor:
    return one_hot(vol[:, None], num_classes, dim=1)


def volume_scores(
    pred: torch.Tensor,
    mask: torch.Tensor,
    volume_index: torch.Tensor,
    num_classes: int,
    *,
    hd95: bool = True,
) -> VolumeScores:
    """Dice (MONAI DiceMetric, background excluded) and 95th-percentile Hausdorff distance.

    ``pred`` and ``mask`` are label maps (N, H, W) or (N, D, H, W). Dice is NaN for a class
    absent from the volume's ground truth; HD95 is NaN/inf when the prediction or ground
    truth of a class is empty (e.g. an attack erased the structure).
    """
    dice_metric = DiceMetric(include_background=False, reduction="none")
    hd_metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    dice, hd = [], []
    with warnings.catch_warnings():  # MONAI warns on every empty class; we count those instead
        warnings.simplefilter("ignore")
        for p, m in zip(volumes(pred.cpu(), volume_index.cpu()), volumes(mask.cpu(), volume_index.cpu()), strict=True):
            p1, m1 = _onehot(p, num_classes), _onehot(m, num_classes)
            dice.append(dice_metric(p1, m1))
            if hd95:
                hd.append(hd_metric(p1, m1))
    k = num_classes - 1
    dice_t = torch.cat(dice).float() if dice else torch.empty(0, k)
    hd_t = (torch.cat(hd).float() if hd else torch.empty(0, k)) if hd95 else None
    return VolumeScores(dice_t, hd_t)


def label_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, voxels labelled alike / voxels foreground in either, (N,); 1 if both empty.

    The multi-class Jaccard index of two label maps over their foreground union. Unlike a
    per-class IoU it moves smoothly while a structure is being erased or shifted (a class
    absent from the target would otherwise score 0 until its very last voxel is gone).
    """
    union = ((pred > 0) | (target > 0)).flatten(1)
    agree = (union & (pred == target).flatten(1)).sum(1).float()
    n = union.sum(1).float()
    return torch.where(n > 0, agree / n.clamp(min=1), torch.ones_like(n))


def target_iou(pred: torch.Tensor, target: torch.Tensor, volume_index: torch.Tensor) -> torch.Tensor:
    """Per volume, :func:`label_iou` of the prediction with a target mask, (V,)."""
    out = [label_iou(p, t) for p, t in zip(volumes(pred.cpu(), volume_index.cpu()),
                                            volumes(target.cpu(), volume_index.cpu()), strict=True)]
    return torch.cat(out) if out else torch.empty(0)


def perturbation_norms(
    x: torch.Tensor, x_adv: torch.Tensor, volume_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-volume Linf and L2 norms of the perturbation (over all of a volume's slices)."""
    delta = (x_adv - x).detach().flatten(1).cpu()
    n_vol = int(volume_index.max()) + 1 if volume_index.numel() else 0
    linf = torch.zeros(n_vol).scatter_reduce_(0, volume_index.cpu(), delta.abs().amax(1), "amax")
    l2 = torch.zeros(n_vol).index_add_(0, volume_index.cpu(), delta.pow(2).sum(1)).sqrt()
    return linf, l2


# --- reduction to sums and counts ---------------------------------------------------------------


def _sum_count(name: str, values: torch.Tensor) -> dict[str, float | int]:
    finite = torch.isfinite(values)
    return {f"{name}-sum": float(values[finite].sum()), f"{name}-count": int(finite.sum())}


def mean_dice(dice: torch.Tensor) -> torch.Tensor:
    """Per-volume mean over the foreground classes present in its ground truth, (V,)."""
    return dice.nanmean(1)


def score_fields(scores: VolumeScores) -> dict[str, float | int]:
    """``dice-sum/-count``, ``dice-classC-sum/-count`` and, with HD95, ``hd95-classC-sum/-count``.

    Dice is NaN exactly where a class is absent from the ground truth (not counted). An
    HD95 that is not finite although the class is present (the prediction lost it) goes
    to ``hd95-classC-undefined-count`` instead of being averaged as infinity.
    """
    out: dict[str, float | int] = _sum_count("dice", mean_dice(scores.dice))
    for k in range(scores.dice.shape[1]):
        out.update(_sum_count(f"dice-class{k + 1}", scores.dice[:, k]))
    if scores.hd95 is not None:
        for k in range(scores.hd95.shape[1]):
            col = scores.hd95[:, k]
            out.update(_sum_count(f"hd95-class{k + 1}", col))
            present = torch.isfinite(scores.dice[:, k])
            out[f"hd95-class{k + 1}-undefined-count"] = int((present & ~torch.isfinite(col)).sum())
    return out


def norm_fields(linf: torch.Tensor, l2: torch.Tensor) -> dict[str, float | int]:
    """``linf-sum/-count`` and ``l2-sum/-count`` of per-volume perturbation norms."""
    return {**_sum_count("linf", linf), **_sum_count("l2", l2)}


def iou_fields(adv_iou: torch.Tensor, clean_iou: torch.Tensor) -> dict[str, float | int]:
    """``target-iou-sum/-count`` under attack and ``clean-target-iou-sum/-count`` without."""
    return {**_sum_count("target-iou", adv_iou), **_sum_count("clean-target-iou", clean_iou)}
