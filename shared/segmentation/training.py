"""The parts of segmentation training: its loss (DiceCE) and its hardening settings.

The loop itself is the one of :mod:`fedaegis.shared.training`
(:func:`~fedaegis.shared.training.train_segmenter`).
"""

from __future__ import annotations

from dataclasses import dataclass

from monai.losses import DiceCELoss
from torch import nn

from .attacks.registry import TARGETED, get_attack


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
