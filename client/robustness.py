"""The site's local attack evaluation: the configured suite on (part of) its test split."""

from __future__ import annotations

import torch
from torch import nn

from ..shared.attacks import evaluate_attacks
from ..shared.run.config import RunConfig
from ..shared.data import ImageSet
from ..shared.results.robustness import encode


def attack_subset(data: ImageSet, max_samples: int, seed: int) -> ImageSet:
    """A seeded sample of at most ``max_samples`` test images (0: all), to bound attack cost."""
    if max_samples == 0 or len(data) <= max_samples:
        return data
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:max_samples]
    return data.subset(idx.sort().values)


def evaluate_robustness(model: nn.Module, data: ImageSet, cfg: RunConfig, seed: int) -> dict[str, int | float]:
    """Counts and sums per (attack, epsilon) on ``data`` (the site's chosen evaluation set), in the
    wire format of :mod:`fedaegis.shared.results.robustness`."""
    if not cfg.attack_names:
        return {}
    torch.manual_seed(seed)
    from .site_log import progress

    results = evaluate_attacks(model, (data.images, data.labels), cfg.attack_suite, cfg.epsilon_values,
                               progress=progress("attacks"))
    return encode(results)
