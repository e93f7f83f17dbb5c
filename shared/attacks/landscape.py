"""Loss landscape over two adversarial directions (Ma et al., the survey's Figure 1), as sums.

Each image's cross-entropy is evaluated on a grid ``x + e1 * d1 + e2 * d2`` (clipped to
[0, 1]) with ``d1`` the sign of its input gradient and ``d2`` either the sign of a
surrogate model's input gradient or a random sign direction made orthogonal to
``d1`` (scaled to Linf 1), ``e1, e2`` from 0 to ``eps``. A site sends only per-cell
sums (``landscape.<model>.i<i>.j<j>.loss-sum``, ``...correct``, ``...n-count``); the
server adds them over sites and divides, so the surface is the federation's mean loss
without any image's loss leaving its site.

Each image's loss is clipped to ``[0, LOSS_BOUND]`` before it is summed (a released sum
needs a per-sample bound, and cross-entropy has none); the wire format, the bound and the
server's rows are the family's, :mod:`fedaegis.shared.results.landscape`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import attack_mode, check_batch
from .ops import input_grad, view_b
from ..data import ImageSet
from ..results.landscape import GLOBAL, LOSS_BOUND, cell_key, decode


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def grid_steps(eps: float, points: int) -> list[float]:
    """The budgets of each axis: ``points`` values evenly from 0 to ``eps``."""
    return torch.linspace(0, eps, points).tolist()


def loss_landscape(model: nn.Module, data: ImageSet | tuple[torch.Tensor, torch.Tensor], *, eps: float = 8 / 255,
                   points: int = 5, surrogate: nn.Module | None = None, seed: int = 0,
                   batch_size: int = 128, label: str = GLOBAL) -> dict[str, float | int]:
    """Per-cell clipped loss sums, correct counts and sizes on a ``points`` x ``points`` grid over [0, eps]^2.

    ``label`` names the model in the keys (``global``, or a defence member such as ``pgd-at``).
    """
    if not (isinstance(points, int) and points >= 2):
        raise ValueError(f"points: must be an integer >= 2, got {points!r}")
    if not eps > 0:
        raise ValueError(f"eps: must be > 0, got {eps!r}")
    x_all, y_all = (data.images, data.labels) if isinstance(data, ImageSet) else data
    steps = grid_steps(eps, points)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float | int] = {}
    for i in range(points):
        for j in range(points):
            out.update({cell_key(label, i, j, "loss-sum"): 0.0, cell_key(label, i, j, "correct"): 0,
                        cell_key(label, i, j, "n-count"): 0})
    for start in range(0, len(y_all), batch_size):
        x, y = check_batch(x_all[start:start + batch_size], y_all[start:start + batch_size])
        with attack_mode(model):
            d1 = input_grad(model, x, lambda z: _ce(z, y))[0].sign()
        if surrogate is not None:
            with attack_mode(surrogate):
                d2 = input_grad(surrogate, x, lambda z: _ce(z, y))[0].sign()
        else:
            r = (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).to(device=x.device, dtype=x.dtype)
            d1f, rf = d1.flatten(1), r.flatten(1)
            coef = (rf * d1f).sum(1) / (d1f * d1f).sum(1).clamp_min(1)
            d2 = r - view_b(coef, x) * d1
            d2 = d2 / view_b(d2.flatten(1).abs().amax(1).clamp_min(1e-12), x)
        with attack_mode(model), torch.inference_mode():
            for i, e1 in enumerate(steps):
                for j, e2 in enumerate(steps):
                    logits = model((x + e1 * d1 + e2 * d2).clamp(0, 1))
                    out[cell_key(label, i, j, "loss-sum")] += float(_ce(logits, y).clamp(0, LOSS_BOUND).sum())
                    out[cell_key(label, i, j, "correct")] += int((logits.argmax(1) == y).sum())
                    out[cell_key(label, i, j, "n-count")] += len(y)
    return out


def landscape_surface(metrics: Mapping[str, float], label: str = GLOBAL) -> torch.Tensor:
    """Summed cell metrics (one site's or the federation's) -> model ``label``'s mean loss grid (points, points).

    A cell with no samples (every site suppressed it) is NaN.
    """
    cells = decode(metrics).get(label)
    if not cells:
        raise ValueError(f"metrics: no landscape cells of {label!r}")
    n = max(i for i, _ in cells) + 1
    grid = torch.full((n, n), float("nan"), dtype=torch.float64)
    for (i, j), c in cells.items():
        if c.get("n-count"):
            grid[i, j] = c["loss-sum"] / c["n-count"]
    return grid
