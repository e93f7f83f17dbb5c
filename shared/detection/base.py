"""What every detector shares: a score per input, higher meaning "more likely adversarial".

Detectors are ``nn.Module``s whose forward pass is differentiable where the
method allows, so an adaptive attacker can optimise through them (and through a
router that uses them), and they are fitted on one site's own data only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..attacks.base import attack_mode
from ..data.types import batch_for

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def feature_fn(model: nn.Module, features: FeatureFn | None = None) -> FeatureFn:
    """The penultimate-feature map of ``model``: ``features`` if given, else ``model.features``."""
    if features is not None:
        return features
    if not callable(getattr(model, "features", None)):
        raise ValueError("features: the model has no .features(x); pass a feature function")
    return model.features


def batched(fn: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor,
            batch_size: int | None = None) -> torch.Tensor:
    """``fn`` over ``x`` in batches (256, fewer for large inputs), with ``model`` in eval mode (restored afterwards)."""
    batch_size = batch_size or batch_for(x.shape[1:], 256)
    with attack_mode(model), torch.no_grad():
        return torch.cat([fn(xb) for xb in x.split(batch_size)]) if len(x) else fn(x[:0])


def threshold_at_fpr(scores: torch.Tensor, fpr: float) -> float:
    """The cut above which a new clean input lies with probability at most ``fpr``: a site-local cut.

    Split conformal (Vovk et al. 2005; Angelopoulos & Bates 2021): the k-th smallest of the n
    held-out clean ``scores``, k = ceil((n + 1)(1 - fpr)). A new clean input exchangeable with them
    exceeds it with probability (n - k + 1)/(n + 1) <= fpr, whatever the score's distribution; the
    plain (1 - fpr) quantile overshoots ``fpr`` by about 1/n (0.107 for 0.1 at n = 120). With fewer
    than 1/fpr - 1 scores no cut can promise that, and the largest score is used.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr: must lie in [0, 1], got {fpr!r}")
    if scores.numel() == 0:
        raise ValueError("scores: a threshold needs at least one clean score")
    n = scores.numel()
    k = min(max(math.ceil((n + 1) * (1.0 - fpr) - 1e-9), 1), n)
    return float(scores.double().flatten().kthvalue(k).values)
