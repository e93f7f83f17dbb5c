"""TI-FGSM (Dong et al., 2019): gradients smoothed by a Gaussian kernel before each step.

Smoothing makes the perturbation robust to small translations, which matters for
medical images where the same lesion appears at different positions per site.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int, require
from .iterative import iterate
from .mifgsm import momentum_direction
from .ops import normalize


def gaussian_kernel(size: int, sigma: float, spatial_dims: int, channels: int,
                    device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Depthwise normalised Gaussian kernel of shape (C, 1, size, ...) for conv2d/conv3d."""
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k1 = torch.exp(-0.5 * (r / sigma) ** 2)
    k = k1
    for _ in range(spatial_dims - 1):
        k = k[..., None] * k1
    k = k / k.sum()
    return k.expand(channels, 1, *([size] * spatial_dims)).contiguous()


def smooth(g: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    conv = F.conv2d if g.dim() == 4 else F.conv3d
    return conv(g, kernel, padding=kernel.shape[-1] // 2, groups=g.shape[1])


class TIFGSM(Attack):
    """Iterative FGSM on Gaussian-smoothed gradients (2D or 3D); ``decay`` > 0 adds momentum."""

    name = "tifgsm"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10,
                 alpha: float | None = None, kernel_size: int = 7, sigma: float = 1.0,
                 decay: float = 0.0, seed: int = 0, early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.alpha = self.threat.eps / self.steps if alpha is None else non_negative("alpha", alpha)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        require(self.kernel_size % 2 == 1, "kernel_size", f"must be odd, got {kernel_size}")
        self.sigma = non_negative("sigma", sigma)
        require(self.sigma > 0, "sigma", "must be > 0")
        self.decay = non_negative("decay", decay)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        norm = self.threat.norm
        kernel = gaussian_kernel(self.kernel_size, self.sigma, x.dim() - 2, x.shape[1],
                                 x.device, x.dtype)
        if self.decay > 0:
            inner = momentum_direction(self.decay, norm)
            state = [torch.zeros_like(x)]

            def direction(g: torch.Tensor, st: list[torch.Tensor]) -> torch.Tensor:
                return inner(smooth(g, kernel), st)
        else:
            state = []

            def direction(g: torch.Tensor, st: list[torch.Tensor]) -> torch.Tensor:
                return normalize(smooth(g, kernel), norm)

        out = iterate(model, x, y, target, x, norm=norm, eps=self.threat.eps, steps=self.steps,
                      alpha=self.alpha, direction=direction, state=state,
                      early_stop=self.early_stop)
        return Run(out.x_adv, out.pred, out.queries)
