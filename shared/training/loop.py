"""The one local training loop: objective (loss), step (plain or DP-SGD), device and precision.

Every kind of local training (plain, class-weighted, adversarial hardening, SSAT with
its unlabelled pool, DP-SGD, segmentation) is this loop with different parts, so a
new training-time defence is a new part, and a device or precision change is made once.
It returns sums and counts only, never per-sample values, ready for a site's reply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..data import ImageSet

from .device import autocast, check_amp, resolve_device
from .objectives import CrossEntropy, Objective, check_class_weights
from .optim import make_optimizer
from .steps import DPSGD, OptimizerStep, shuffled

if TYPE_CHECKING:
    from ..segmentation.data import SegmentationSet
    from ..segmentation.training import AdversarialTraining


@dataclass
class Fit:
    """What a fit reports: sums over the last epoch, ``steps`` over the whole fit."""

    num_examples: int
    loss_sum: float = 0.0  # sum over the last epoch's samples of the batch-mean loss
    correct: int = 0  # last epoch, on the logits the objective returns
    samples: int = 0  # last epoch's samples trained on
    steps: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the objective's own


def fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    objective: Objective | None = None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    class_weights: torch.Tensor | None = None,
    unlabelled: torch.Tensor | None = None,
    privacy: DPSGD | None = None,
    max_steps: int | None = None,
    skip_singletons: bool | None = None,
    device: torch.device | str | None = None,
    amp: str = "none",
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> Fit:
    """Train ``model`` in place on ``device`` (default: where the model is; it stays there); batches
    move there one at a time.

    An epoch is one pass over (``inputs``, ``targets``) in a seeded order, or, under
    ``privacy``, Opacus' Poisson-sampled batches. Objectives that need unlabelled data
    draw a batch of ``batch_size`` per step, cycling through ``unlabelled`` in a seeded
    order. ``skip_singletons`` (default: unless under ``privacy``, whose model has no BatchNorm)
    skips one-sample batches (BatchNorm cannot train on them);
    ``max_steps`` stops the fit early. ``progress(done, total, "epoch")`` is called after each
    epoch (a site logs it locally: :func:`fedaegis.client.site_log.progress`).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size: must be >= 1, got {epochs} and {batch_size}")
    objective = objective or CrossEntropy()
    if skip_singletons is None:
        skip_singletons = privacy is None
    if objective.needs_unlabelled and (unlabelled is None or len(unlabelled) == 0):
        raise ValueError(f"unlabelled: {objective.name} needs unlabelled images")
    if device is None:
        dev = next(iter(model.parameters())).device
    else:
        dev = device if isinstance(device, torch.device) else resolve_device(device)
    check_amp(amp, dev)
    if privacy is not None and amp != "none":
        raise ValueError("amp: DP-SGD (Opacus) trains in full precision; set amp = 'none'")
    model.to(dev)
    weight = None if class_weights is None else class_weights.to(dev)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    out = Fit(num_examples=len(targets))
    u_order, u_pos = torch.empty(0, dtype=torch.long), 0
    with contextlib.ExitStack() as stack:
        if privacy is not None:
            net, opt, loader = stack.enter_context(
                privacy.attach(model, opt, inputs, targets, batch_size, epochs, gen, dev))
            epoch_batches = lambda: loader  # noqa: E731
        else:
            net = model
            epoch_batches = lambda: shuffled(inputs, targets, batch_size, gen)  # noqa: E731
        step = OptimizerStep(opt, dev, amp)
        objective.begin(model)
        for epoch in range(epochs):
            if max_steps is not None and out.steps >= max_steps:
                break
            if progress is not None and epoch:
                progress(epoch, epochs, "epoch")
            out.loss_sum, out.correct, out.samples = 0.0, 0, 0
            objective.reset()
            for x, y in epoch_batches():
                if max_steps is not None and out.steps >= max_steps:
                    break
                if len(y) == 0 or (len(y) == 1 and skip_singletons):  # Poisson sampling can draw an empty batch
                    continue
                xu = None
                if objective.needs_unlabelled:
                    assert unlabelled is not None
                    if u_pos + batch_size > len(u_order):
                        u_order, u_pos = torch.randperm(len(unlabelled), generator=gen), 0
                    xu = unlabelled[u_order[u_pos:u_pos + batch_size]].to(dev)
                    u_pos += batch_size
                x, y = x.to(dev), y.to(dev)
                net.train()
                with autocast(dev, amp):
                    loss, logits = objective.loss(net, x, y, gen, xu, weight=weight)
                step(loss)
                out.steps += 1
                out.loss_sum += float(loss.detach()) * len(y)
                out.samples += len(y)
                if logits is not None:
                    out.correct += int((logits.detach().argmax(1) == y).sum())
    model.zero_grad(set_to_none=True)  # free the gradients; nothing downstream needs them
    if progress is not None:
        progress(epochs, epochs, "epoch")
    out.counts = objective.counts()
    return out


def train_classifier(
    model: nn.Module,
    data: ImageSet | tuple[torch.Tensor, torch.Tensor],
    objective: Objective | None = None,
    **kwargs,
) -> dict[str, float | int]:
    """:func:`fit` a classifier; the reply's sums: ``num-examples``, ``train-loss-sum``, ``train-correct``
    (last epoch) and the objective's counts as ``train-<name>`` (each a ``-count``).

    ``class_weights`` (one non-negative weight per class, e.g. :func:`balanced_weights`)
    weight every labelled loss term; other keywords as :func:`fit`.
    """
    x, y = (data.images, data.labels) if isinstance(data, ImageSet) else data
    kwargs["class_weights"] = check_class_weights(kwargs.get("class_weights"), y)
    run = fit(model, x, y, objective, **kwargs)
    out: dict[str, float | int] = {"num-examples": run.num_examples, "train-loss-sum": run.loss_sum,
                                   "train-correct": run.correct}
    out.update({f"train-{k}": v for k, v in run.counts.items()})
    return out


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
    device: torch.device | str | None = None,
    amp: str = "none",
    seed: int = 0,
) -> dict[str, float | int]:
    """:func:`fit` a segmenter on DiceCE (optionally hardened); ``num-examples`` (the site's training
    samples, the FedAvg weight), ``train-loss-sum`` over the last epoch's samples, and counts under
    ``seg.train.``. ``train-loss-sum / seg.train.samples-count`` is the exact mean loss; it equals
    ``train-loss-sum / num-examples`` unless ``max_steps`` cut the last epoch short.
    """
    from .objectives import SegmentationObjective

    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    run = fit(model, data.images, data.masks, SegmentationObjective(adversarial, seed), epochs=epochs,
              batch_size=batch_size, lr=lr, optimizer=optimizer, max_steps=max_steps, skip_singletons=has_bn,
              device=device, amp=amp, seed=seed)
    return {"num-examples": run.num_examples, "train-loss-sum": run.loss_sum,
            "seg.train.samples-count": run.samples, "seg.train.steps-count": run.steps,
            **{f"seg.train.{k}": v for k, v in run.counts.items()}}
