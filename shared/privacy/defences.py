"""Update-level defences against gradient inversion: DP-SGD (Opacus) and gradient pruning.

DP-SGD bounds what any single image can contribute to an update (per-sample clipping)
and hides it in Gaussian noise, with a guarantee (epsilon, delta) from Opacus'
accountant; it is a step of the one training loop (:class:`fedaegis.shared.training.DPSGD`),
and here is what an attacker reads off one such step. Pruning (Zhu et al.'s DLG defence)
only sends the largest entries of an update; it has no guarantee, and the audits show
how much it actually buys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..training import DPSGD, fit


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
    from .inversion import gradients_from_update

    work = copy.deepcopy(model)
    before = {k: v.detach().clone() for k, v in work.state_dict().items()}
    privacy = DPSGD(target_epsilon, target_delta, max_grad_norm, noise_seed=seed + 1)
    fit(work, images, labels, privacy=privacy, epochs=1, batch_size=len(labels), lr=lr, optimizer="sgd", seed=seed)
    # one step of SGD from a fresh momentum buffer is plain SGD: the delta is lr times the gradient
    return gradients_from_update(work, before, work.state_dict(), lr), privacy.epsilon


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
