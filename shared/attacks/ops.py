"""Tensor helpers shared by the attacks: norms, projections, input gradients, random starts.

Everything is batched over the first dimension and works for 2D and 3D inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Relative slack before an L2 perturbation is rescaled: keeps projection idempotent
# (re-projecting a projected point changes nothing) despite float rounding.
L2_SLACK = 1e-6


def view_b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (N,) to broadcast against ``like`` (N, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def lp_norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Linf and L2 norms."""
    flat = delta.flatten(1)
    if flat.shape[1] == 0:
        zero = flat.new_zeros(flat.shape[0])
        return zero, zero
    return flat.abs().amax(1), flat.norm(dim=1)


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def within(norms: torch.Tensor, eps: float | torch.Tensor, rtol: float = 0.0) -> torch.Tensor:
    """Per-sample: a perturbation was found (finite norm) and its norm is at most ``eps``.

    Minimum-norm attacks mark "none found" with ``inf``; a plain ``norms <= eps`` would
    count those as inside an ``eps=inf`` budget.
    """
    return torch.isfinite(norms) & (norms <= eps * (1 + rtol))


def box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise bounds of the Linf ball intersected with [0, 1]."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then into [0, 1].

    Feasible points are returned bit-identical, so projecting twice is harmless.
    ``eps`` may be a per-sample tensor.
    """
    if norm == "linf":
        if isinstance(eps, torch.Tensor):
            e = view_b(eps, x)
            lo, hi = (x - e).clamp(min=0.0), (x + e).clamp(max=1.0)
        else:
            lo, hi = box(x, eps)
        return torch.minimum(torch.maximum(x_adv, lo), hi)
    delta = x_adv - x
    n = delta.flatten(1).norm(dim=1)
    e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, eps)
    over = n > e * (1 + L2_SLACK)
    out = x_adv.clamp(0.0, 1.0)
    if over.any():
        scale = e / n.clamp(min=1e-30)
        scaled = (x + delta * view_b(scale, x)).clamp_(0.0, 1.0)
        out = torch.where(view_b(over, x), scaled, out)
    return out


def normalize(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm``: sign for Linf, g/||g||_2 for L2."""
    if norm == "linf":
        return g.sign()
    n = g.flatten(1).norm(dim=1).clamp_(min=1e-12)
    return g / view_b(n, g)


def random_in_ball(
    x: torch.Tensor, norm: str, eps: float | torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """A uniform random point of the ``norm`` ball around ``x``, clipped to [0, 1]."""
    e = view_b(eps, x) if isinstance(eps, torch.Tensor) else eps
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return project(x, x + (2 * u - 1) * e, norm, eps)
    d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    d = normalize(d, "l2")
    dim = x[0].numel()
    r = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / dim)
    return project(x, x + d * view_b(r, x) * e, norm, eps)


Objective = Callable[[torch.Tensor], torch.Tensor]


def input_grad(
    model: nn.Module, x: torch.Tensor, objective: Objective
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of a per-sample ``objective(logits)`` w.r.t. the input only.

    Returns (gradient, logits, objective values), all detached. Model parameters
    are expected frozen (see ``attack_mode``), so no weight gradients are built.
    """
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    obj = objective(logits)
    (g,) = torch.autograd.grad(obj.sum(), xg)
    return g, logits.detach(), obj.detach()


def compact(keep: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Select rows ``keep`` of each tensor (``None`` passes through)."""
    return [t[keep] if t is not None else None for t in tensors]
