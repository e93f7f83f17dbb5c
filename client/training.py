"""Local training and evaluation at a site; both return sums and counts, never per-sample values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..shared.data import ImageSet


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def train_local(
    model: nn.Module,
    data: ImageSet,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    class_weighting: str = "none",
    num_classes: int | None = None,
    seed: int = 0,
) -> dict[str, float | int]:
    """Train in place for ``epochs``; returns last-epoch loss sum and correct count.

    ``class_weighting='balanced'`` weights the loss by inverse local class frequency:
    medical sets are skewed (PneumoniaMNIST is 3:1) and sites differ in their skew.
    """
    gen = torch.Generator().manual_seed(seed)
    weight = balanced_weights(data.labels, num_classes or data.num_classes) if class_weighting == "balanced" else None
    opt = make_optimizer(optimizer, model.parameters(), lr)
    model.train()
    n = len(data)
    loss_sum, correct = 0.0, 0
    for _ in range(epochs):
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            x, y = data.images[idx], data.labels[idx]
            if len(idx) == 1 and model.training:  # BatchNorm cannot train on a single sample
                continue
            logits = model(x)
            loss = F.cross_entropy(logits, y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y).sum())
    return {"num-examples": n, "train-loss-sum": loss_sum, "train-correct": correct}


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights (mean 1 over present classes; absent classes get 0)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


@torch.inference_mode()
def evaluate_local(model: nn.Module, data: ImageSet, batch_size: int = 256) -> dict[str, float | int]:
    """Accuracy ingredients on the site's test split: n, correct, and summed cross-entropy."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in zip(data.images.split(batch_size), data.labels.split(batch_size)):
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"num-examples": len(data), "loss-sum": loss_sum, "correct": correct}
