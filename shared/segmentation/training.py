"""Local training of a segmenter at a site, optionally hardened by adversarial training.

Returns sums and counts only, like the classifier's ``train_local``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss
from torch import nn

from .attacks.ensemble import l2_radius
from .attacks.registry import TARGETED, build_attack, get_attack
from .data import SegmentationSet

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class AdversarialTraining:
    """PGD-style hardening (Madry et al.) inside local training.

    Each batch is attacked with ``attack`` (untargeted) at budget ``eps`` (per-voxel RMS
    for L2, as in evaluation) and the loss is ``(1 - mix) * clean + mix * adversarial``;
    ``mix=1`` trains on adversarial inputs only. Few steps (default 3) keep the cost at
    roughly ``steps + 1`` times plain training.
    """

    eps: float = 4 / 255
    norm: str = "linf"
    steps: int = 3
    step_size: float | None = None
    mix: float = 0.5
    attack: str = "pgd"

    def __post_init__(self) -> None:
        if not 0 <= self.mix <= 1:
            raise ValueError(f"adversarial-mix: must be in [0, 1], got {self.mix}")
        if not self.eps > 0:
            raise ValueError(f"adversarial-eps: must be > 0, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"adversarial-steps: must be >= 1, got {self.steps}")
        get_attack(self.attack)
        if self.attack in TARGETED:
            raise ValueError(f"adversarial-attack: {self.attack!r} is targeted; use an untargeted attack")


def segmentation_loss() -> nn.Module:
    """DiceCE (MONAI): Dice copes with the 5% foreground, CE gives smooth early gradients."""
    return DiceCELoss(to_onehot_y=True, softmax=True)


def _optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {name!r}")


def train_segmenter(
    model: nn.Module,
    data: SegmentationSet,
    *,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 1e-3,
    optimizer: str = "adam",
    max_steps: int | None = None,
    adversarial: AdversarialTraining | None = None,
    seed: int = 0,
) -> dict[str, float | int]:
    """Train in place; returns ``num-examples`` (the site's training samples, the FedAvg
    weight), ``train-loss-sum`` over the last epoch's samples, and counts under ``seg.train.``.

    ``train-loss-sum / seg.train.samples-count`` is the exact mean loss; it equals
    ``train-loss-sum / num-examples`` unless ``max_steps`` cut the last epoch short.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    loss_fn = segmentation_loss()
    opt = _optimizer(optimizer, model, lr)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    n, steps, adv_count = len(data), 0, 0
    loss_sum, seen, voxels = 0.0, 0, 0
    model.train()
    for _ in range(epochs):
        if max_steps is not None and steps >= max_steps:
            break
        loss_sum, seen, voxels = 0.0, 0, 0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            if max_steps is not None and steps >= max_steps:
                break
            if len(idx) == 1 and has_bn:  # BatchNorm cannot train on one sample
                continue
            x, y = data.images[idx], data.masks[idx]
            loss = torch.zeros(())
            if adversarial is None or adversarial.mix < 1:
                loss = loss_fn(model(x), y[:, None])
                if adversarial is not None:
                    loss = (1 - adversarial.mix) * loss
            if adversarial is not None:
                a = adversarial
                radius = l2_radius(a.eps, x) if a.norm == "l2" else a.eps
                attack = build_attack(a.attack, eps=radius, norm=a.norm, steps=a.steps, step_size=a.step_size,
                                      seed=seed + steps)
                x_adv = attack.perturb(model, x, y)
                loss = loss + a.mix * loss_fn(model(x_adv), y[:, None])
                adv_count += len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
            voxels += int(y[0].numel()) * len(idx)
    opt.zero_grad(set_to_none=True)  # free the gradients; nothing downstream needs them
    return {
        "num-examples": n,
        "train-loss-sum": loss_sum,
        "seg.train.samples-count": seen,
        "seg.train.voxels-count": voxels,
        "seg.train.steps-count": steps,
        "seg.train.adversarial-count": adv_count,
    }
