"""Where a site computes and in which precision: one resolution, passed down to every part.

The device is the site's choice (node config ``device``), never the coordinator's;
whatever leaves the site is moved to the CPU first, so nothing on the wire depends on it.
Mixed precision (run config ``amp``) only changes the arithmetic of training's forward pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import TypeVar

import torch

from ..data.types import LazyImages
from ..run.config import AMP_MODES

T = TypeVar("T")


def resolve_device(name: object = None) -> torch.device:
    """``cuda``, ``cuda:N`` or ``cpu``; None or "" picks the first CUDA device if there is one, else the CPU."""
    if name is None or name == "":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ValueError(f"device: must be 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device: must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if device.index is None else device.index
    if index >= count:
        raise ValueError(f"device: {name!r} is not available here ({count} CUDA device(s))")
    return torch.device("cuda", index)


def node_device(node_config: Mapping[str, object]) -> torch.device:
    """The device a site's node config asks for (``device``), resolved as :func:`resolve_device`."""
    return resolve_device(node_config.get("device"))


def check_amp(amp: str, device: torch.device) -> None:
    """``amp`` must be a known mode, and fp16 needs CUDA (its GradScaler has no CPU kernels worth having)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp: must be one of {AMP_MODES}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp: 'fp16' needs a CUDA device; use 'bf16' on the CPU")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for ``amp`` on ``device``; a no-op context for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every tensor on the CPU (what a reply carries)."""
    return {k: v.detach().cpu() for k, v in state.items()}



def data_to(data: T, device: torch.device) -> T:
    """A copy of a dataset (ImageSet, SegmentationSet) with its tensors on ``device``; itself when already there.

    Images kept as stored (:class:`~fedaegis.shared.data.types.LazyImages`) stay where they are
    and deliver each batch on ``device``: the split is never made whole to be moved.
    """
    moved = {f.name: v.to(device) for f in dataclasses.fields(data)  # type: ignore[arg-type]
             if isinstance(v := getattr(data, f.name), (torch.Tensor, LazyImages)) and v.device != device}
    return dataclasses.replace(data, **moved) if moved else data  # type: ignore[type-var]
