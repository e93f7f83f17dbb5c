"""The one interface every evasion attack implements.

An attack sees a model, a batch ``x`` in [0, 1] and labels ``y``, and returns an
:class:`AttackResult` holding the adversarial batch and *aggregate* counts only:
per-sample outcomes never leave the site, so results can be summed across
batches and hospitals without revealing which image was fooled.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from .ops import lp_norms, project

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class ThreatModel:
    """What the adversary may do: an ``norm`` ball of radius ``eps`` around the input.

    ``targeted`` asks for a chosen class instead of any wrong one; ``target`` fixes
    that class for every sample, otherwise each sample's least-likely class is used.
    ``eps`` may be ``inf`` for minimum-norm attacks (C&W, DeepFool, FAB, FMN).
    """

    norm: str = "linf"
    eps: float = 8 / 255
    targeted: bool = False
    target: int | None = None

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm: must be one of {NORMS}, got {self.norm!r}")
        eps = float(self.eps)
        if math.isnan(eps) or eps < 0:
            raise ValueError(f"eps: must be a non-negative number, got {self.eps!r}")
        object.__setattr__(self, "eps", eps)
        if self.target is not None:
            if not self.targeted:
                raise ValueError("target: a target class needs targeted=True")
            if int(self.target) != self.target or self.target < 0:
                raise ValueError(f"target: must be a class index >= 0, got {self.target!r}")


@dataclass
class AttackResult:
    """Outcome of one attack on one batch: the adversarial inputs and summable counts.

    ``successes`` counts initially-correct samples whose goal was reached
    (misclassified, or classified as the target); the norm sums are over those
    successful perturbations. ``queries`` counts per-sample model evaluations the
    attack made (a gradient counts as one), excluding the shared clean pass.
    ``extra`` holds attack-specific counts (e.g. per-stage survivors).
    """

    x_adv: torch.Tensor | None
    n: int
    clean_correct: int
    robust_correct: int
    successes: int
    linf_sum: float
    l2_sum: float
    queries: int
    extra: dict[str, int] = field(default_factory=dict)

    COUNT_FIELDS: ClassVar[tuple[str, ...]] = (
        "n",
        "clean_correct",
        "robust_correct",
        "successes",
        "linf_sum",
        "l2_sum",
        "queries",
    )

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.n if self.n else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return self.robust_correct / self.n if self.n else float("nan")

    @property
    def success_rate(self) -> float:
        """Fraction of initially-correct samples the attack fooled."""
        return self.successes / self.clean_correct if self.clean_correct else float("nan")

    def counts(self) -> dict[str, int | float]:
        """The aggregate statistics, without the adversarial tensor."""
        out: dict[str, int | float] = {k: getattr(self, k) for k in self.COUNT_FIELDS}
        out.update(self.extra)
        return out

    def merge(self, other: AttackResult, *, keep_x_adv: bool = True) -> AttackResult:
        """Sum the counts of two batches; adversarial tensors are concatenated if both exist."""
        x_adv = None
        if keep_x_adv and self.x_adv is not None and other.x_adv is not None:
            x_adv = torch.cat([self.x_adv, other.x_adv])
        extra = dict(self.extra)
        for k, v in other.extra.items():
            extra[k] = extra.get(k, 0) + v
        summed = {k: getattr(self, k) + getattr(other, k) for k in self.COUNT_FIELDS}
        return AttackResult(x_adv=x_adv, extra=extra, **summed)

    @staticmethod
    def empty() -> AttackResult:
        return AttackResult(None, 0, 0, 0, 0, 0.0, 0.0, 0)


class Run(NamedTuple):
    """What an attack's core returns for the samples it attacked.

    ``pred`` is the model's prediction at ``x_adv`` when the attack already knows
    it (saving a forward pass); ``None`` makes the base class evaluate it.
    """

    x_adv: torch.Tensor
    pred: torch.Tensor | None
    queries: int
    extra: dict[str, int] | None = None


class Details(NamedTuple):
    """Per-sample outcome, used internally (e.g. by the ensemble); never reported."""

    x_adv: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    target: torch.Tensor | None
    queries: int
    extra: dict[str, int] | None = None


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the attack; the caller's state is restored after.

    Freezing parameters means backward passes compute input gradients only, and
    no gradient can accumulate in ``param.grad``.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in params:
        p.requires_grad_(False)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in params:
            p.requires_grad_(flag)


def check_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch: (N, C, H, W) or (N, C, D, H, W) floats in [0, 1], labels (N,)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x: expected a floating-point tensor")
    if x.dim() not in (4, 5):
        raise ValueError(f"x: expected shape (N, C, H, W) or (N, C, D, H, W), got {tuple(x.shape)}")
    y = torch.as_tensor(y, device=x.device).reshape(-1).long()
    if y.numel() != x.shape[0]:
        raise ValueError(f"y: {y.numel()} labels for {x.shape[0]} inputs")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("x: inputs must lie in [0, 1]")
    if x.is_inference():
        x = x.clone()
    return x.detach(), y


def summarize(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    adv_pred: torch.Tensor,
    target: torch.Tensor | None,
    queries: int,
    extra: dict[str, int] | None = None,
) -> AttackResult:
    """Reduce per-sample outcomes to the counts an :class:`AttackResult` carries."""
    correct = clean_pred == y
    robust = correct & (adv_pred == y)
    if target is not None:  # a sample already of the target class cannot be a success
        success = correct & (target != y) & (adv_pred == target)
    else:
        success = correct & (adv_pred != y)
    linf, l2 = lp_norms(x_adv - x)
    return AttackResult(
        x_adv=x_adv,
        n=int(x.shape[0]),
        clean_correct=int(correct.sum()),
        robust_correct=int(robust.sum()),
        successes=int(success.sum()),
        linf_sum=float(linf[success].sum()),
        l2_sum=float(l2[success].sum()),
        queries=int(queries),
        extra=dict(extra or {}),
    )


class Attack(ABC):
    """Base class: validation, eval mode, clean pass, projection and bookkeeping.

    Subclasses implement :meth:`_run`, which only sees the samples worth attacking
    (correctly classified, and not already of the target class) and must return
    inputs inside the threat model. The base class re-projects them anyway, so
    every returned perturbation is within budget and in [0, 1].
    """

    name: ClassVar[str] = "attack"
    norms: ClassVar[tuple[str, ...]] = NORMS
    supports_targeted: ClassVar[bool] = True
    needs_finite_eps: ClassVar[bool] = True
    default_threat: ClassVar[ThreatModel] = ThreatModel()

    def __init__(
        self,
        threat: ThreatModel | None = None,
        *,
        seed: int = 0,
        early_stop: bool = True,
    ) -> None:
        self.threat = threat if threat is not None else self.default_threat
        if self.threat.norm not in self.norms:
            raise ValueError(f"norm: {self.name} supports {self.norms}, got {self.threat.norm!r}")
        if self.threat.targeted and not self.supports_targeted:
            raise ValueError(f"targeted: {self.name} has no targeted mode")
        if self.needs_finite_eps and not math.isfinite(self.threat.eps):
            raise ValueError(f"eps: {self.name} needs a finite budget")
        if int(seed) != seed:
            raise ValueError(f"seed: must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.early_stop = bool(early_stop)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat})"

    def with_threat(self, **changes: object) -> Attack:
        """A copy of this attack with some threat-model fields changed (e.g. ``eps``)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.threat = replace(self.threat, **changes)
        return clone

    # -- public API -----------------------------------------------------------------

    def attack(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        clean_logits: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch; pass ``clean_logits`` to reuse a clean forward pass already made."""
        x, y = check_batch(x, y)
        with attack_mode(model):
            d = self.details(model, x, y, clean_logits=clean_logits)
        return summarize(x, d.x_adv, y, d.clean_pred, d.adv_pred, d.target, d.queries, d.extra)

    def details(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        clean_logits: torch.Tensor | None = None,
    ) -> Details:
        """Per-sample outcome; call inside :func:`attack_mode` (internal use)."""
        if clean_logits is None:
            with torch.inference_mode():
                clean_logits = model(x)
        clean_logits = clean_logits.detach()
        if clean_logits.is_inference():
            clean_logits = clean_logits.clone()

        def run(idx: torch.Tensor, target: torch.Tensor | None, gen: torch.Generator) -> Run:
            return self._run(model, x[idx], y[idx], target, clean_logits[idx], gen)

        return self._attack_correct(model, x, y, clean_logits, run)

    def _attack_correct(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        clean_logits: torch.Tensor,
        run: Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], Run],
    ) -> Details:
        """Attack only the samples worth it via ``run(indices, their targets, generator)``,
        then project into the threat model and predict where the attack did not.
        ``clean_logits`` must be detached and not an inference tensor."""
        clean_pred = clean_logits.argmax(1)
        target = self.targets(clean_logits, y)
        todo = clean_pred == y
        if target is not None:
            todo &= target != y
        idx = todo.nonzero().squeeze(1)
        x_adv = x.clone()
        adv_pred = clean_pred.clone()
        queries = 0
        extra = None
        if idx.numel():
            xs, ys = x[idx], y[idx]
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
            result = run(idx, target[idx] if target is not None else None, gen)
            xa = project(xs, result.x_adv, self.threat.norm, self.threat.eps)
            queries, extra = result.queries, result.extra
            # evaluate where the prediction is unknown or projection moved the point
            stale = (xa != result.x_adv).flatten(1).any(1)
            if result.pred is None:
                stale = torch.ones_like(stale)
                pred = torch.empty_like(ys)
            else:
                pred = result.pred.clone()
            if stale.any():
                with torch.inference_mode():
                    pred[stale] = model(xa[stale]).argmax(1)
            x_adv[idx] = xa
            adv_pred[idx] = pred
        return Details(x_adv, clean_pred, adv_pred, target, queries, extra)

    def targets(self, clean_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Target class per sample: the fixed ``target`` or the least-likely class."""
        if not self.threat.targeted:
            return None
        if self.threat.target is not None:
            if self.threat.target >= clean_logits.shape[1]:
                raise ValueError(
                    f"target: class {self.threat.target} but the model has "
                    f"{clean_logits.shape[1]} classes"
                )
            return torch.full_like(y, self.threat.target)
        return clean_logits.argmin(1)

    # -- to implement ---------------------------------------------------------------

    @abstractmethod
    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        logits: torch.Tensor,
        gen: torch.Generator,
    ) -> Run:
        """Attack samples that are all correctly classified; ``logits`` are their clean logits."""


def require(ok: bool, field: str, message: str) -> None:
    """Raise the ``ValueError`` used for bad attack parameters, naming the field."""
    if not ok:
        raise ValueError(f"{field}: {message}")


def positive_int(field: str, value: object) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, field,
            f"must be an integer >= 1, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def non_negative(field: str, value: object) -> float:
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
            field, f"must be a number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]
