"""Model checkpoints: weights plus what is needed to rebuild the network later."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .tasks import build_task_model
from ..store.repository import atomic_write

MODEL_KEYS = ("model", "norm", "in_channels", "num_classes", "spatial_dims")


def save_checkpoint(path: Path, state_dict: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write ``{"meta": ..., "state_dict": ...}``; ``meta`` must describe the model."""
    missing = [k for k in MODEL_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    buf = io.BytesIO()
    torch.save({"meta": dict(meta), "state_dict": dict(state_dict)}, buf)
    atomic_write(path, buf.getvalue())
    return path


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored at ``path`` and return it (eval mode) with its meta."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    model = build_task_model(meta)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta
