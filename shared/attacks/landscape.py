"""Loss landscape over two adversarial directions (Ma et al., the survey's Figure 1), as sums.

Each image's cross-entropy is evaluated on a grid ``x + e1 * d1 + e2 * d2`` (clipped to
[0, 1]) with ``d1`` the sign of its input gradient and ``d2`` either the sign of a
surrogate model's input gradient or a random sign direction made orthogonal to
``d1`` (scaled to Linf 1), ``e1, e2`` from 0 to ``eps``. A site sends only per-cell
sums (``landscape.i<i>.j<j>.loss-sum``, ``...correct``, ``...n-count``); the server adds
them over sites and divides, so the surface is the federation's mean loss without
any image's loss leaving its site.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import attack_mode, check_batch
from .ops import input_grad, view_b
from ..data import ImageSet

PREFIX = "landscape"
_CELL = re.compile(rf"^{PREFIX}\.i(?P<i>[0-9]+)\.j(?P<j>[0-9]+)\.(?P<field>loss-sum|correct|n-count)$")


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def loss_landscape(model: nn.Module, data: ImageSet | tuple[torch.Tensor, torch.Tensor], *, eps: float = 8 / 255,
                   points: int = 5, surrogate: nn.Module | None = None, seed: int = 0,
                   batch_size: int = 128) -> dict[str, float | int]:
    """Per-cell loss sums, correct counts and sizes on a ``points`` x ``points`` grid over [0, eps]^2."""
    if not (isinstance(points, int) and points >= 2):
        raise ValueError(f"points: must be an integer >= 2, got {points!r}")
    if not eps > 0:
        raise ValueError(f"eps: must be > 0, got {eps!r}")
    x_all, y_all = (data.images, data.labels) if isinstance(data, ImageSet) else data
    steps = torch.linspace(0, eps, points).tolist()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float | int] = {}
    for i in range(points):
        for j in range(points):
            out.update({f"{PREFIX}.i{i}.j{j}.loss-sum": 0.0, f"{PREFIX}.i{i}.j{j}.correct": 0,
                        f"{PREFIX}.i{i}.j{j}.n-count": 0})
    for start in range(0, len(y_all), batch_size):
        x, y = check_batch(x_all[start:start + batch_size], y_all[start:start + batch_size])
        with attack_mode(model):
            d1 = input_grad(model, x, lambda z: _ce(z, y))[0].sign()
        if surrogate is not None:
            with attack_mode(surrogate):
                d2 = input_grad(surrogate, x, lambda z: _ce(z, y))[0].sign()
        else:
            r = torch.randint(0, 2, x.shape, generator=gen).to(x.dtype) * 2 - 1
            d1f, rf = d1.flatten(1), r.flatten(1)
            coef = (rf * d1f).sum(1) / (d1f * d1f).sum(1).clamp_min(1)
            d2 = r - view_b(coef, x) * d1
            d2 = d2 / view_b(d2.flatten(1).abs().amax(1).clamp_min(1e-12), x)
        with attack_mode(model), torch.inference_mode():
            for i, e1 in enumerate(steps):
                for j, e2 in enumerate(steps):
                    logits = model((x + e1 * d1 + e2 * d2).clamp(0, 1))
                    out[f"{PREFIX}.i{i}.j{j}.loss-sum"] += float(_ce(logits, y).sum())
                    out[f"{PREFIX}.i{i}.j{j}.correct"] += int((logits.argmax(1) == y).sum())
                    out[f"{PREFIX}.i{i}.j{j}.n-count"] += len(y)
    return out


def landscape_surface(metrics: Mapping[str, float]) -> torch.Tensor:
    """Summed cell metrics (one site's or the federation's) -> mean loss grid (points, points)."""
    cells: dict[tuple[int, int], dict[str, float]] = {}
    for key, value in metrics.items():
        m = _CELL.match(key)
        if m:
            cells.setdefault((int(m["i"]), int(m["j"])), {})[m["field"]] = float(value)
    if not cells:
        raise ValueError("metrics: no landscape cells")
    n = max(i for i, _ in cells) + 1
    grid = torch.full((n, n), float("nan"), dtype=torch.float64)
    for (i, j), c in cells.items():
        if c.get("n-count"):
            grid[i, j] = c["loss-sum"] / c["n-count"]
    return grid
