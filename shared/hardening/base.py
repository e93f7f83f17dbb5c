"""The one interface every adversarial-training method implements: a loss part of the training loop.

A method only defines its per-batch loss (crafting its own adversarial inputs); it is
an :class:`~fedaegis.shared.training.Objective`, so the one loop
(:func:`fedaegis.shared.training.train_classifier`) trains every method the same way and
reports summed loss and correct counts, never per-sample values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ..attacks.base import attack_mode
from ..attacks.ops import box
from ..training.objectives import Objective

CraftingObjective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, x_adv) -> per-sample


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{field}: {message}")


def _number(field: str, value: object, *, low: float = 0.0, high: float = math.inf) -> float:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and low <= float(value) <= high, field, f"must be a number in [{low}, {high}], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _count(field: str, value: object, *, low: int = 1) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= low, field,
             f"must be an integer >= {low}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    objective: CraftingObjective,
    *,
    eps: float,
    alpha: float,
    steps: int,
    gen: torch.Generator | None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linf PGD ascent on ``objective(logits, x_adv)`` (summed over the batch), fixed steps.

    Unlike the evaluation attacks it neither skips misclassified samples nor stops
    early: training needs the loss maximiser for every sample. The model is put in
    eval mode with frozen parameters (``attack_mode``) so crafting moves neither
    BatchNorm statistics nor weight gradients.
    """
    x = x.detach()
    if start is None and gen is not None:  # uniform random start; drawn on the CPU generator
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        start = x + (2 * u - 1) * eps
    lo, hi = box(x, eps)
    start = x if start is None else start
    xa = torch.minimum(torch.maximum(start.detach(), lo), hi)
    if steps == 0 or eps == 0:
        return xa
    with attack_mode(model):
        for _ in range(steps):
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(objective(model(xa), xa).sum(), xa)
            xa = torch.minimum(torch.maximum(xa.detach() + alpha * g.sign(), lo), hi)
    return xa.detach()


def weighted_mean(values: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-sample ``values``, each weighted by its class weight ``weight[y]`` if given.

    It is what ``F.cross_entropy(..., weight=weight)`` does to the cross-entropy, so
    every term of a hardening loss (CE, KL, boosted CE) is class-weighted the same way.
    """
    if weight is None:
        return values.mean()
    w = weight.to(values.dtype)[y]
    return (values * w).sum() / w.sum().clamp_min(1e-12)


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits in eval mode without gradients (a target or pseudo-label, not a training signal)."""
    with attack_mode(model), torch.no_grad():
        return model(x)


class Hardening(Objective):
    """An adversarial-training method: its threat model (Linf ``eps``) and per-batch loss.

    ``steps`` and ``alpha`` set the inner PGD (``alpha`` defaults to 2.5 * eps / steps,
    Madry et al.'s ratio). Methods that use unlabelled data set ``needs_unlabelled``.
    ``loss`` takes optional per-class ``weight``s (e.g. ``balanced`` inverse-frequency
    weights of the site's labels): every labelled term is then a class-weighted mean
    (:func:`weighted_mean`), so an imbalanced site does not collapse to its majority class.
    """

    name: ClassVar[str] = "hardening"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, alpha: float | None = None) -> None:
        self.eps = _number("eps", eps, high=1.0)
        self.steps = _count("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else _number("alpha", alpha)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

