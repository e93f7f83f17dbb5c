"""Proximal gradient split learning (PSGL, after Khowaja et al., IEEE TNSE 2023), simplified.

The site keeps the first layers of the network *and* the classifier head (a U-shaped
split, so labels never leave it); the server runs the middle. Only activations and
their gradients cross the wire: no weights, so there is no update to invert, and the
gradient-inversion attacks do not apply. What an attacker can try instead is to invert
the cut-layer activations (:func:`activation_inversion_audit`).

The site's own layers take proximal-gradient steps (a gradient step, then the prox of an
L1 or L2 penalty), which keeps its weights sparse/small; ``input_noise`` perturbs the images
before the first layer, a stand-in for the paper's deliberate perturbation of the data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .inversion import total_variation
from .quality import quality_sums

Prox = Literal["l1", "l2", "none"]


class SplitModel(NamedTuple):
    site: nn.Sequential  # first layers, at the site
    server: nn.Sequential  # middle layers, at the server
    head: nn.Module  # classifier, at the site

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.server(self.site(x)))


def split_model(model: nn.Module, cut: int) -> SplitModel:
    """Split a ``body`` + ``head`` model (SmallCNN, LeNet) after ``body[:cut]``; copies the weights.

    For SmallCNN, cut=4 keeps the first conv block with its pooling at the site, cut=8 two.
    """
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Sequential) or not hasattr(model, "head"):
        raise ValueError("split_model needs a model with a Sequential 'body' and a 'head' (e.g. SmallCNN)")
    if not 0 < cut < len(body):
        raise ValueError(f"cut: must be in 1..{len(body) - 1}, got {cut}")
    model = copy.deepcopy(model)
    return SplitModel(nn.Sequential(*body[:cut]), nn.Sequential(*body[cut:]), model.head)


@dataclass
class Wire:
    """Everything that crossed between site and server: (direction, kind, shape), in order."""

    log: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)

    def send(self, direction: str, kind: str, tensor: torch.Tensor) -> torch.Tensor:
        """Cross the wire: only a detached copy arrives, so no autograd graph leaks across."""
        self.log.append((direction, kind, tuple(tensor.shape)))
        return tensor.detach().clone()


def _prox_(params: list[nn.Parameter], kind: Prox, step: float) -> None:
    """In place: the proximal operator of step * R(w), R = ||w||_1 or ||w||^2 / 2."""
    with torch.no_grad():
        for p in params:
            if kind == "l1":
                p.copy_(p.sign() * (p.abs() - step).clamp(min=0))
            elif kind == "l2":
                p.div_(1 + step)


def psgl_train(
    split: SplitModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-3,
    server_lr: float = 2e-3,
    prox: Prox = "l1",
    prox_strength: float = 1e-4,
    input_noise: float = 0.0,
    seed: int = 0,
    wire: Wire | None = None,
) -> dict[str, float | int]:
    """Train the split model in place; returns last-epoch counts/sums like ``fedaegis.shared.training.train_classifier``.

    Site: an Adam step, then the prox of lr * ``prox_strength`` * R on its weight
    matrices/kernels (proximal Adam: plain proximal SGD learns far slower on these
    nets). Server: Adam on its own layers.
    """
    if prox not in ("l1", "l2", "none"):
        raise ValueError(f"prox: unknown penalty {prox!r} (use 'l1', 'l2' or 'none')")
    wire = wire if wire is not None else Wire()
    gen = torch.Generator().manual_seed(seed)
    site_params = [*split.site.parameters(), *split.head.parameters()]
    site_opt = torch.optim.Adam(site_params, lr=lr)
    server_opt = torch.optim.Adam(split.server.parameters(), lr=server_lr)
    penalised = [p for p in site_params if p.dim() > 1]
    for module in split:
        module.train()
    loss_sum, correct = 0.0, 0
    for _ in range(epochs):
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(len(labels), generator=gen).split(batch_size):
            x, y = images[idx], labels[idx]
            if input_noise > 0:
                x = (x + input_noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)
            cut = split.site(x)  # site
            cut_at_server = wire.send("up", "activations", cut).requires_grad_(True)
            features = split.server(cut_at_server)  # server
            features_at_site = wire.send("down", "activations", features).requires_grad_(True)
            logits = split.head(features_at_site)  # site: labels stay here
            loss = F.cross_entropy(logits, y)
            site_opt.zero_grad(set_to_none=True)
            server_opt.zero_grad(set_to_none=True)
            loss.backward()
            features.backward(wire.send("up", "gradients", features_at_site.grad))  # type: ignore[arg-type]
            server_opt.step()
            cut.backward(wire.send("down", "gradients", cut_at_server.grad))  # type: ignore[arg-type]
            site_opt.step()
            _prox_(penalised, prox, lr * prox_strength)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y).sum())
    return {"num-examples": len(labels), "train-loss-sum": loss_sum, "train-correct": correct}


@torch.inference_mode()
def psgl_evaluate(
    split: SplitModel, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> dict[str, float | int]:
    """Counts/sums on a test split, like ``evaluate_local``."""
    for module in split:
        module.eval()
    loss_sum, correct = 0.0, 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        logits = split.forward(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"num-examples": len(labels), "loss-sum": loss_sum, "correct": correct}


def invert_activations(
    site: nn.Module,
    activations: torch.Tensor,
    input_shape: tuple[int, ...],
    *,
    iterations: int = 300,
    lr: float = 0.05,
    tv_weight: float = 1e-3,
    seed: int = 0,
) -> torch.Tensor:
    """White-box inversion of cut-layer activations: Adam on a dummy input to reproduce them.

    The attacker is given the site's layers, more than a real server has, so the audit
    is an upper bound on what the activations leak.
    """
    site.eval()
    target = activations.detach()
    scale = target.pow(2).mean() + 1e-12
    x = torch.rand(input_shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(iterations):
        opt.zero_grad()
        loss = (site(x) - target).pow(2).mean() / scale + tv_weight * total_variation(x)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def activation_inversion_audit(
    split: SplitModel,
    images: torch.Tensor,
    *,
    input_noise: float = 0.0,
    seed: int = 0,
    prefix: str = "inversion",
    **attack: object,
) -> dict[str, float | int]:
    """Invert what the site would send for ``images``; PSNR/SSIM sums against the clean images."""
    gen = torch.Generator().manual_seed(seed)
    x = images if input_noise <= 0 else (images + input_noise * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    split.site.eval()
    with torch.no_grad():
        sent = split.site(x)
    recon = invert_activations(split.site, sent, tuple(images.shape), seed=seed, **attack)  # type: ignore[arg-type]
    return quality_sums(recon, images, prefix=prefix)
