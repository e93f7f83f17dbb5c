"""The site's local attack evaluation: the configured suite, and the loss landscape, on (part of) its test split."""

from __future__ import annotations

import torch
from torch import nn

from ..shared.attacks import evaluate_attacks, targeted_labels
from ..shared.run.config import RunConfig
from ..shared.data import ImageSet
from ..shared.models.members import MemberSet
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
    return encode(results, targeted=targeted_labels(cfg.attack_suite, cfg.epsilon_values))


def evaluate_landscape(model: nn.Module, data: ImageSet, cfg: RunConfig, seed: int) -> dict[str, int | float]:
    """Loss-landscape sums per grid cell (:mod:`fedaegis.shared.results.landscape`) on ``data``: of the
    global model, or of each member in a defence comparison (standard and hardened side by side).

    ``seed`` draws the random second direction; at a site it is the site's own secret one.
    """
    if not cfg.landscape:
        return {}
    from ..shared.attacks.landscape import loss_landscape
    from ..shared.results.landscape import models

    out: dict[str, int | float] = {}
    for label in models(cfg):
        member = model.members[label] if isinstance(model, MemberSet) and cfg.defence_models else model
        out.update(loss_landscape(member, data, eps=cfg.landscape_eps, points=cfg.landscape_points, seed=seed,
                                  label=label))
    return out
