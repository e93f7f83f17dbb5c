"""Clean evaluation of a classifier on a site's test split: sums and counts, never per-sample values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageSet
from ..data.types import batch_for


@torch.inference_mode()
def evaluate_local(model: nn.Module, data: ImageSet, batch_size: int | None = None) -> dict[str, float | int]:
    """Accuracy ingredients on the site's test split: n, correct, and summed cross-entropy.

    Runs where the model is; batches move there one at a time (256 images, fewer for large
    inputs: :func:`~fedaegis.shared.data.types.batch_for`).
    """
    batch_size = batch_size or batch_for(data.images.shape[1:], 256)
    model.eval()
    device = next(iter(model.parameters())).device
    loss_sum, correct = 0.0, 0
    for x, y in zip(data.images.split(batch_size), data.labels.split(batch_size)):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"num-examples": len(data), "loss-sum": loss_sum, "correct": correct}
