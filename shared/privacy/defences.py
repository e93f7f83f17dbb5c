"""Update-level defences against gradient inversion: DP-SGD (Opacus) and gradient pruning.

DP-SGD bounds what any single image can contribute to an update (per-sample clipping)
and hides it in Gaussian noise, with a guarantee (epsilon, delta) from Opacus'
accountant. Pruning (Zhu et al.'s DLG defence) only sends the largest entries of an
update; it has no guarantee, and the audits show how much it actually buys.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


# A simulation needs no cryptographic RNG; RDP at a single large step is merely conservative;
# the first layer's hook fires without input gradients by design.
_BENIGN_OPACUS_WARNINGS = ("Secure RNG turned off", "Optimal order is the largest alpha", "Full backward hook is firing")


class DPTraining(NamedTuple):
    metrics: dict[str, float | int]  # num-examples, train-loss-sum, train-correct (counts/sums)
    epsilon: float  # spent, from the accountant, at ``delta``
    delta: float
    noise_multiplier: float


def dp_sgd_train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    target_epsilon: float,
    target_delta: float = 1e-5,
    max_grad_norm: float = 1.0,
    optimizer: str = "sgd",
    seed: int = 0,
) -> DPTraining:
    """Train ``model`` in place with DP-SGD calibrated to (``target_epsilon``, ``target_delta``).

    Opacus picks the noise multiplier for this many epochs at sampling rate
    batch_size / N (Poisson sampling), clips each sample's gradient to ``max_grad_norm``
    and reports the epsilon actually spent. The model must have no BatchNorm (use
    ``norm='group'``); Opacus' validator explains any other incompatibility.
    """
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-SGD compatible (use norm='group'): {errors[0]}")
    for module in model.modules():  # in-place ReLU after a hooked layer breaks Opacus' backward hooks
        if getattr(module, "inplace", False):
            module.inplace = False  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(images, labels), batch_size=min(batch_size, len(labels)), generator=gen)
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam" else torch.optim.SGD(model.parameters(), lr=lr)
    )
    with warnings.catch_warnings():
        for benign in _BENIGN_OPACUS_WARNINGS:
            warnings.filterwarnings("ignore", message=benign)
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        private, opt, loader = engine.make_private_with_epsilon(
            module=model, optimizer=opt, data_loader=loader, target_epsilon=target_epsilon,
            target_delta=target_delta, epochs=epochs, max_grad_norm=max_grad_norm,
            noise_generator=torch.Generator().manual_seed(seed + 1),
        )
        metrics = _train(private, opt, loader, epochs, len(labels))
        epsilon = float(engine.get_epsilon(target_delta))
    return DPTraining(metrics, epsilon, target_delta, float(opt.noise_multiplier))


def _train(private: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, epochs: int, n: int) -> dict[str, float | int]:
    private.train()
    loss_sum, correct = 0.0, 0
    try:
        for _ in range(epochs):
            loss_sum, correct = 0.0, 0
            for x, y in loader:
                if len(y) == 0:  # Poisson sampling can draw an empty batch
                    continue
                logits = private(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
    finally:
        private.to_standard_module()  # type: ignore[operator]  # drop Opacus' hooks; the model keeps its weights
    return {"num-examples": n, "train-loss-sum": loss_sum, "train-correct": correct}


def dp_sgd_step_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    target_epsilon: float,
    target_delta: float = 1e-5,
    max_grad_norm: float = 1.0,
    lr: float = 0.1,
    seed: int = 0,
) -> tuple[list[torch.Tensor], float]:
    """What an attacker reads off one DP-SGD step on this batch, and the epsilon it cost.

    One Opacus step (the batch is the whole dataset, sampling rate 1) on a copy of
    ``model``; the gradient is recovered from the model delta exactly as a server would
    ((w_before - w_after) / lr). Spending the whole budget on one step is the least noise
    this epsilon allows, so the audit errs on the attacker's side.
    """
    from .inversion import gradients_from_update  # local: inversion imports nothing from here

    work = copy.deepcopy(model)
    before = {k: v.detach().clone() for k, v in work.state_dict().items()}
    run = dp_sgd_train(
        work, images, labels, epochs=1, batch_size=len(labels), lr=lr, target_epsilon=target_epsilon,
        target_delta=target_delta, max_grad_norm=max_grad_norm, seed=seed,
    )
    return gradients_from_update(work, before, work.state_dict(), lr), run.epsilon


def prune_smallest(tensors: Sequence[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """Zero the ``fraction`` of entries with the smallest magnitude in each tensor (DLG's defence)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction: must be in [0, 1), got {fraction}")
    out = []
    for t in tensors:
        k = math.floor(fraction * t.numel())
        if k == 0 or not t.is_floating_point():
            out.append(t.clone())
            continue
        threshold = t.abs().flatten().kthvalue(k).values
        out.append(torch.where(t.abs() > threshold, t, torch.zeros_like(t)))
    return out


def prune_update(
    global_state: Mapping[str, torch.Tensor], local_state: Mapping[str, torch.Tensor], fraction: float
) -> dict[str, torch.Tensor]:
    """The weights to send when only the largest (1 - fraction) of the update travels.

    w_sent = w_global + prune(w_local - w_global); integer buffers are sent unchanged.
    """
    names = [k for k, v in local_state.items() if v.is_floating_point()]
    deltas = prune_smallest([local_state[k] - global_state[k] for k in names], fraction)
    sent = dict(local_state)
    for name, delta in zip(names, deltas, strict=True):
        sent[name] = global_state[name] + delta
    return sent
