"""Label flipping: a malicious site trains on wrong labels to drag the global model off course.

Two standard variants (Tolpegin et al., 2020): every label reversed (y -> C-1-y) or a
targeted source -> target map (e.g. pneumonia -> normal, the costly miss). Optionally
only a share of the samples is flipped, so the site's training statistics look sane.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from ..data import ImageSet


def flip_labels(
    labels: torch.Tensor,
    num_classes: int,
    *,
    mapping: Mapping[int, int] | None = None,
    fraction: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """A flipped copy of ``labels``: by ``mapping`` (others unchanged) or else y -> C-1-y.

    ``fraction`` of the *flippable* samples (those the rule changes) are flipped.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: must be in [0, 1], got {fraction}")
    if mapping is None:
        table = torch.arange(num_classes - 1, -1, -1)
    else:
        table = torch.arange(num_classes)
        for src, dst in mapping.items():
            if not (0 <= src < num_classes and 0 <= dst < num_classes):
                raise ValueError(f"mapping: {src} -> {dst} is outside the {num_classes} classes")
            table[src] = dst
    flipped = table[labels]
    changed = torch.nonzero(flipped != labels).flatten()
    gen = torch.Generator().manual_seed(seed)
    keep = changed[torch.randperm(len(changed), generator=gen)[round(fraction * len(changed)) :]]
    flipped[keep] = labels[keep]
    return flipped


def flip_imageset(data: ImageSet, **kwargs: object) -> ImageSet:
    """:func:`flip_labels` applied to a site's :class:`ImageSet`."""
    return replace(data, labels=flip_labels(data.labels, data.num_classes, **kwargs))  # type: ignore[arg-type]
