"""The one interface every adversarial-training method implements, and the loop that runs it.

A method only defines its per-batch loss (crafting its own adversarial inputs);
:func:`harden_step` and :func:`train_adversarial` are shared, so every method
trains and reports the same way: summed loss and correct counts, never per-sample
values, ready for a site's reply.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ..attacks.base import attack_mode
from ..attacks.ops import box
from ..data import ImageSet

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    objective: Objective,
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


class Hardening(ABC):
    """An adversarial-training method: its threat model (Linf ``eps``) and per-batch loss.

    ``steps`` and ``alpha`` set the inner PGD (``alpha`` defaults to 2.5 * eps / steps,
    Madry et al.'s ratio). Methods that use unlabelled data set ``needs_unlabelled``.
    ``loss`` takes optional per-class ``weight``s (e.g. ``balanced`` inverse-frequency
    weights of the site's labels): every labelled term is then a class-weighted mean
    (:func:`weighted_mean`), so an imbalanced site does not collapse to its majority class.
    """

    name: ClassVar[str] = "hardening"
    needs_unlabelled: ClassVar[bool] = False

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, alpha: float | None = None) -> None:
        self.eps = _number("eps", eps, high=1.0)
        self.steps = _count("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else _number("alpha", alpha)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    def begin(self, model: nn.Module) -> None:
        """Called once before training ``model`` (e.g. to freeze a copy as teacher)."""

    def counts(self) -> dict[str, int]:
        """Method-specific counts since the last :meth:`reset` (e.g. SSAT's pseudo-labels)."""
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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (class-``weight``ed) training loss of the batch and the logits its accuracy is counted on."""


def harden_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    method: Hardening,
    gen: torch.Generator,
    x_unlabelled: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[float, int]:
    """One optimiser step of ``method`` on a batch; returns (loss sum, correct count)."""
    model.train()
    loss, logits = method.loss(model, x, y, gen, x_unlabelled, weight=weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()) * len(y), int((logits.detach().argmax(1) == y).sum())


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimisers of plain local training (``client.training``): Adam, or SGD with momentum."""
    _require(name in ("adam", "sgd"), "optimizer", f"must be 'adam' or 'sgd', got {name!r}")
    return torch.optim.Adam(params, lr=lr) if name == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)


def train_adversarial(
    model: nn.Module,
    data: ImageSet | tuple[torch.Tensor, torch.Tensor],
    method: Hardening,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    unlabelled: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, float | int]:
    """Train ``model`` in place with ``method``; last-epoch sums as in ``train_local``.

    An epoch is one pass over the labelled data; methods that need unlabelled data
    draw an unlabelled batch of ``batch_size`` per step, cycling through
    ``unlabelled`` in a seeded order. Method-specific counts of the last epoch are
    added as ``train-<name>`` (each a ``-count``, so the result passes
    ``protocol.check_metrics``). ``class_weights`` (one non-negative weight per class,
    e.g. :func:`fedaegis.client.training.balanced_weights`) weight every labelled loss term.
    """
    x_all, y_all = (data.images, data.labels) if isinstance(data, ImageSet) else data
    _count("epochs", epochs)
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        _require(class_weights.ndim == 1 and len(class_weights) > int(y_all.max()) and bool((class_weights >= 0).all())
                 and bool(class_weights[y_all].sum() > 0), "class_weights",
                 "need one non-negative weight per class, positive for some class present")
    _count("batch_size", batch_size)
    if method.needs_unlabelled and (unlabelled is None or len(unlabelled) == 0):
        raise ValueError(f"unlabelled: {method.name} needs unlabelled images")
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    n = len(y_all)
    u_order, u_pos = torch.empty(0, dtype=torch.long), 0
    method.begin(model)
    loss_sum, correct = 0.0, 0
    for _ in range(epochs):
        loss_sum, correct = 0.0, 0
        method.reset()
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            if len(idx) == 1:  # as in train_local: BatchNorm cannot train on a single sample
                continue
            xu = None
            if method.needs_unlabelled:
                assert unlabelled is not None
                if u_pos + batch_size > len(u_order):
                    u_order, u_pos = torch.randperm(len(unlabelled), generator=gen), 0
                xu = unlabelled[u_order[u_pos:u_pos + batch_size]]
                u_pos += batch_size
            s, c = harden_step(model, x_all[idx], y_all[idx], opt, method, gen, xu, weight=class_weights)
            loss_sum, correct = loss_sum + s, correct + c
    out: dict[str, float | int] = {"num-examples": n, "train-loss-sum": loss_sum, "train-correct": correct}
    out.update({f"train-{k}": v for k, v in method.counts().items()})
    return out
