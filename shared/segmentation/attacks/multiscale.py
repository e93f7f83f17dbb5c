"""Multi-scale PGD: the segmentation loss at full, 1/2 and 1/4 resolution, summed.

In the spirit of Shao et al.'s multi-scale attacks on medical segmenters: coarse scales
reward perturbations that move whole regions (the structure's extent) rather than
boundary pixels only, which a full-resolution loss tends to favour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from ...attacks.base import ThreatModel
from .common import onehot
from .pgd import PGD

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


class MultiScale(PGD):
    """PGD on :func:`multiscale_loss` from a random start (ascent from ``y``, or descent to the target)."""

    name: ClassVar[str] = "multiscale"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10, step_size: float | None = None,
                 seed: int = 0, scales: Sequence[int] = DEFAULT_SCALES) -> None:
        super().__init__(threat, steps=steps, step_size=step_size, seed=seed, random_init=True)
        self.scales = tuple(int(s) for s in scales)
        if not self.scales or min(self.scales) < 1:
            raise ValueError(f"scales: need positive pooling factors, got {self.scales}")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return multiscale_loss(logits, labels, self.scales)
