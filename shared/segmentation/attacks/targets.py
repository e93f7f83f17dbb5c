"""Target masks for targeted attacks, derived from a volume's own label map.

Clinically meaningful goals: make a structure vanish (a missed hippocampus part changes a
volumetry report) or move it by a few voxels (a plausible but wrong location).
"""

from __future__ import annotations

import torch

TARGET_KINDS = ("remove", "shift")


def remove_structure(mask: torch.Tensor, label: int) -> torch.Tensor:
    """The mask with class ``label`` set to background (0)."""
    out = mask.clone()
    out[out == label] = 0
    return out


def shift_structure(mask: torch.Tensor, k: int, axis: int = -1, label: int | None = None) -> torch.Tensor:
    """The mask with the foreground (or only class ``label``) moved ``k`` voxels along ``axis``.

    ``axis`` counts spatial axes of one sample (negative from the end); the structure is
    translated, vacated voxels become background and anything moved past the border is
    dropped (no wrap-around).
    """
    spatial = mask.dim() - 1
    ax = (axis % spatial) + 1
    moving = mask > 0 if label is None else mask == label
    values = torch.where(moving, mask, torch.zeros_like(mask))
    n = mask.shape[ax]
    shifted = torch.zeros_like(mask)
    if abs(k) < n:
        src = values.narrow(ax, max(0, -k), n - abs(k))
        shifted.narrow(ax, max(0, k), n - abs(k)).copy_(src)
    out = torch.where(moving, torch.zeros_like(mask), mask)
    return torch.where(shifted > 0, shifted, out)


def parse_target(spec: str) -> tuple[str, int, int]:
    """``remove:L`` -> ("remove", L, 0); ``shift:K[:AXIS]`` -> ("shift", K, AXIS) (defaults 1, 4, -1)."""
    kind, _, arg = spec.partition(":")
    if kind not in TARGET_KINDS:
        raise ValueError(f"target: unknown kind {kind!r} in {spec!r}; choose one of {TARGET_KINDS}")
    try:
        if kind == "remove":
            return kind, int(arg or 1), 0
        k, _, axis = arg.partition(":")
        return kind, int(k or 4), int(axis) if axis else -1
    except ValueError:
        raise ValueError(f"target: cannot parse {spec!r}; use 'remove:LABEL' or 'shift:K[:AXIS]'") from None


def make_target(mask: torch.Tensor, spec: str = "remove:1") -> torch.Tensor:
    """A target mask from a spec: ``remove:L`` (erase class L) or ``shift:K[:AXIS]``."""
    kind, n, axis = parse_target(spec)
    return remove_structure(mask, n) if kind == "remove" else shift_structure(mask, n, axis)
