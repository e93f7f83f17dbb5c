"""The privacy-utility table: for each defence, what it costs in accuracy and what it hides.

One row per defence (none, dp-sgd, pruning, psgl): the epsilon it guarantees (inf when
none), the test accuracy of a model trained with it, and the PSNR/SSIM of the
reconstruction an attacker gets from what the site sends in the first round. Rows are
built from counts and sums (:func:`table_row`), so the same code turns federated,
server-side totals into a table.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data import ImageSet
from ..training import DPSGD, evaluate_local, train_classifier
from .defences import dp_sgd_step_gradients, prune_smallest, prune_update
from .inversion import Method, inversion_audit
from .psgl import activation_inversion_audit, psgl_evaluate, psgl_train, split_model

DEFENCES = ("none", "dp-sgd", "pruning", "psgl")


@dataclass(frozen=True)
class PrivacyRow:
    defence: str
    epsilon: float  # math.inf: no formal guarantee
    accuracy: float
    psnr: float  # dB, mean over audited images
    ssim: float

    def as_dict(self) -> dict[str, str | float]:
        return asdict(self)


def table_row(defence: str, epsilon: float, metrics: Mapping[str, float | int], prefix: str = "inversion") -> PrivacyRow:
    """A row from summed counts: accuracy = correct / num-examples, PSNR = psnr-sum / images-count."""
    images = metrics[f"{prefix}.images-count"]
    return PrivacyRow(
        defence=defence,
        epsilon=float(epsilon),
        accuracy=float(metrics["correct"]) / float(metrics["num-examples"]),
        psnr=float(metrics[f"{prefix}.psnr-sum"]) / images,
        ssim=float(metrics[f"{prefix}.ssim-sum"]) / images,
    )


def privacy_utility_table(
    train: ImageSet,
    test: ImageSet,
    audit_images: torch.Tensor,
    audit_labels: torch.Tensor,
    *,
    model_fn: Callable[[], nn.Module],
    defences: Sequence[str] = DEFENCES,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 2e-3,
    target_epsilon: float = 8.0,
    target_delta: float = 1e-5,
    max_grad_norm: float = 1.0,
    prune_fraction: float = 0.9,
    psgl_cut: int = 2,
    psgl_noise: float = 0.0,
    method: Method = "idlg",
    iterations: int = 300,
    seed: int = 0,
) -> list[PrivacyRow]:
    """Train one model per defence on ``train``, score it on ``test``, attack its first update.

    Every defence starts from the same ``model_fn()`` weights; the audit attacks the
    update of ``audit_images`` at those weights (the first round, where leakage is worst
    for an untrained model). ``psgl_cut`` indexes ``model.body``.
    """
    unknown = set(defences) - set(DEFENCES)
    if unknown:
        raise ValueError(f"defences: unknown {sorted(unknown)}; choose from {DEFENCES}")
    torch.manual_seed(seed)
    initial = model_fn()
    attack = {"method": method, "iterations": iterations, "seed": seed}
    rows = []
    for defence in defences:
        model = copy.deepcopy(initial)
        epsilon = math.inf
        if defence == "psgl":
            split = split_model(initial, psgl_cut)
            psgl_train(split, train.images, train.labels, epochs=epochs, batch_size=batch_size, lr=lr,
                       server_lr=lr, input_noise=psgl_noise, seed=seed)
            metrics = psgl_evaluate(split, test.images, test.labels)
            audit = activation_inversion_audit(split_model(initial, psgl_cut), audit_images, input_noise=psgl_noise, seed=seed)
        elif defence == "dp-sgd":
            privacy = DPSGD(target_epsilon, target_delta, max_grad_norm, noise_seed=seed + 1)
            train_classifier(model, train, privacy=privacy, epochs=epochs, batch_size=batch_size, lr=lr,
                             optimizer="adam", seed=seed)
            epsilon = privacy.epsilon
            metrics = evaluate_local(model, test)
            grads, _ = dp_sgd_step_gradients(initial, audit_images, audit_labels, target_epsilon=target_epsilon,
                                             target_delta=target_delta, max_grad_norm=max_grad_norm, seed=seed)
            audit = inversion_audit(initial, audit_images, audit_labels, gradients=grads, **attack)  # type: ignore[arg-type]
        else:
            train_classifier(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
            defend = None
            if defence == "pruning":
                model.load_state_dict(prune_update(initial.state_dict(), model.state_dict(), prune_fraction))
                defend = lambda g: prune_smallest(g, prune_fraction)  # noqa: E731
            metrics = evaluate_local(model, test)
            audit = inversion_audit(initial, audit_images, audit_labels, defence=defend, **attack)  # type: ignore[arg-type]
        rows.append(table_row(defence, epsilon, {**metrics, **audit}))
    return rows


def format_table(rows: Sequence[PrivacyRow]) -> str:
    """A plain-text table for logs and reports."""
    lines = [f"{'defence':<10} {'epsilon':>8} {'accuracy':>9} {'PSNR dB':>8} {'SSIM':>6}"]
    lines += [f"{r.defence:<10} {r.epsilon:>8.2f} {r.accuracy:>9.3f} {r.psnr:>8.2f} {r.ssim:>6.3f}" for r in rows]
    return "\n".join(lines)
