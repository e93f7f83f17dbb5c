"""Loss parts of the one training loop: what a batch costs, separate from how the step is taken.

An :class:`Objective` turns a batch into a mean loss (and the logits its accuracy is
counted on). Plain and class-weighted cross-entropy live here; each adversarial-training
method (``shared/hardening/``) is an Objective of its own; segmentation's DiceCE, with
optional PGD hardening, is :class:`SegmentationObjective`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..segmentation.training import AdversarialTraining


class Objective(ABC):
    """A batch's training loss. ``needs_unlabelled`` objectives get an unlabelled batch too.

    ``loss`` returns the (class-``weight``ed) mean loss and the logits the batch's
    accuracy is counted on (None where accuracy means nothing, e.g. segmentation).
    """

    name: ClassVar[str] = "objective"
    needs_unlabelled: ClassVar[bool] = False

    def begin(self, model: nn.Module) -> None:
        """Called once before training ``model`` (e.g. to freeze a copy as teacher)."""

    def counts(self) -> dict[str, int]:
        """Objective-specific counts (e.g. SSAT's pseudo-labels), reported as ``train-<name>``."""
        return {}

    def reset(self) -> None:
        """Start counting afresh (called at the start of every epoch)."""

    @abstractmethod
    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        x_unlabelled: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean (class-``weight``ed) loss of the batch and the logits its accuracy is counted on
        (None where accuracy means nothing, e.g. segmentation)."""


class CrossEntropy(Objective):
    """Plain cross-entropy on the clean batch, class-weighted when ``weight`` is given."""

    name = "cross-entropy"

    def loss(self, model, x, y, gen, x_unlabelled=None, weight=None):  # type: ignore[override]
        logits = model(x)
        return F.cross_entropy(logits, y, weight=weight), logits


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights (mean 1 over present classes; absent classes get 0).

    Medical sets are skewed (PneumoniaMNIST is 3:1) and sites differ in their skew.
    """
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def check_class_weights(weights: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor | None:
    """One non-negative weight per class, positive for some class present; as float32."""
    if weights is None:
        return None
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if not (weights.ndim == 1 and len(weights) > int(labels.max()) and bool((weights >= 0).all())
            and bool(weights[labels].sum() > 0)):
        raise ValueError("class_weights: need one non-negative weight per class, positive for some class present")
    return weights


class SegmentationObjective(Objective):
    """MONAI's DiceCE, optionally hardened: ``(1 - mix) * clean + mix * adversarial`` (see AdversarialTraining).

    Each adversarial batch is attacked with seed ``seed + k`` for the k-th batch trained.
    Counts: ``voxels`` of the epoch's masks and ``adversarial`` samples over the whole fit.
    """

    name = "segmentation"

    def __init__(self, adversarial: AdversarialTraining | None = None, seed: int = 0) -> None:
        from ..segmentation.training import segmentation_loss

        self.adversarial = adversarial
        self.seed = seed
        self._loss_fn = segmentation_loss()
        self._batches, self._adversarial, self._voxels = 0, 0, 0

    def reset(self) -> None:
        self._voxels = 0

    def counts(self) -> dict[str, int]:
        return {"voxels-count": self._voxels, "adversarial-count": self._adversarial}

    def loss(self, model, x, y, gen, x_unlabelled=None, weight=None):  # type: ignore[override]
        from ..segmentation.attacks.ensemble import l2_radius
        from ..segmentation.attacks.registry import build_attack

        a = self.adversarial
        loss = torch.zeros((), device=x.device)
        if a is None or a.mix < 1:
            loss = self._loss_fn(model(x), y[:, None])
            if a is not None:
                loss = (1 - a.mix) * loss
        if a is not None:
            radius = l2_radius(a.eps, x) if a.norm == "l2" else a.eps
            attack = build_attack(a.attack, eps=radius, norm=a.norm, steps=a.steps, step_size=a.step_size,
                                  seed=self.seed + self._batches)
            x_adv = attack.perturb(model, x, y)
            loss = loss + a.mix * self._loss_fn(model(x_adv), y[:, None])
            self._adversarial += len(x)
        self._batches += 1
        self._voxels += int(y[0].numel()) * len(x)
        return loss, None
