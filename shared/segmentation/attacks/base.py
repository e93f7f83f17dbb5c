"""The attack library's contract for segmenters: dense per-pixel labels, a target *mask*.

A segmentation attack is an :class:`~fedaegis.shared.attacks.base.Attack`: the same
threat model (norm, eps), seed, parameter checks naming the field, and eval mode with
frozen weights while it runs. It differs in what it attacks: every pixel (voxel) has a
label, so ``y`` is a label map (N, H, W) or (N, D, H, W), a targeted goal is a whole target
mask given per call (``perturb(..., target_mask=...)``) instead of a class in the threat
model, and the outcome is scored per volume (Dice, HD95) by
:mod:`~fedaegis.shared.segmentation.attacks.ensemble`, not by the classifier's counts.

A new attack subclasses :class:`SegmentationAttack` in a file of its own, implements
:meth:`~SegmentationAttack._perturb` (most via :func:`~.common.ascend` and a per-sample
loss), and is listed in :mod:`.registry`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ...attacks.base import (
    Attack,
    AttackResult,
    Details,
    Run,
    ThreatModel,
    attack_mode,
    non_negative,
    positive_int,
)
from .common import check_dense_batch, generator


class SegmentationAttack(Attack):
    """Base class: validation, eval mode and seeding for attacks on dense label maps.

    ``steps`` is the attack's iteration budget and ``step_size`` its step (default
    ``2.5 * eps / steps``; attacks that set their own step, such as APGD, ignore it).
    Subclasses implement :meth:`_perturb`, which returns inputs inside the threat model.
    """

    #: True for attacks that only make sense with a target mask (ASMA).
    needs_target: ClassVar[bool] = False

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10,
                 step_size: float | None = None, seed: int = 0) -> None:
        super().__init__(threat, seed=seed, early_stop=False)
        if self.threat.targeted:
            raise ValueError(f"targeted: {self.name} takes its target as a mask, "
                             "perturb(model, x, y_mask, target_mask)")
        self.steps = positive_int("steps", steps)
        self.step_size = (2.5 * self.threat.eps / self.steps if step_size is None
                          else non_negative("step_size", step_size))

    def perturb(self, model: nn.Module, x: torch.Tensor, y_mask: torch.Tensor,
                target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial inputs for batch ``x`` in [0, 1] with label maps ``y_mask``.

        Untargeted, the attack lowers agreement with ``y_mask``; with ``target_mask`` it drives
        the prediction towards that mask. The result lies in the ``norm`` ball of radius
        ``eps`` around ``x`` and in [0, 1]; the model's train/eval state is restored after.
        """
        if target_mask is None and self.needs_target:
            raise ValueError(f"target_mask: {self.name.upper()} is a targeted attack and needs a target "
                             "mask (see fedaegis.shared.segmentation.attacks.targets)")
        x, y, target = check_dense_batch(x, y_mask, target_mask)
        with attack_mode(model):
            return self._perturb(model, x, y, target, generator(x, self.seed))

    @abstractmethod
    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """Attack a validated batch (inside :func:`attack_mode`); return points in the threat model."""

    # -- the classifier's per-image pipeline does not apply to label maps --------------------

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               clean_logits: torch.Tensor | None = None) -> AttackResult:
        raise TypeError(f"{type(self).__name__} attacks label maps: use perturb(model, x, y_mask, target_mask)")

    def details(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                clean_logits: torch.Tensor | None = None) -> Details:
        raise TypeError(f"{type(self).__name__} attacks label maps: use perturb(model, x, y_mask, target_mask)")

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             logits: torch.Tensor, gen: torch.Generator) -> Run:
        raise TypeError(f"{type(self).__name__} attacks label maps: use perturb(model, x, y_mask, target_mask)")
