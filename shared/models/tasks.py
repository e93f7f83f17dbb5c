"""One model description for both tasks, so the server, the sites and checkpoints agree."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..run.config import RunConfig


def model_meta(cfg: RunConfig) -> dict[str, Any]:
    """What rebuilds the federation's model: stored in checkpoints, derived from the run config."""
    if cfg.task == "segmentation":
        return {"task": "segmentation", "model": cfg.seg_model, "norm": "group", "in_channels": 1,
                "num_classes": 3, "spatial_dims": cfg.spatial_dims, "image_size": cfg.image_size}
    meta = {"task": "classification", "model": cfg.model, "norm": cfg.norm, "in_channels": cfg.in_channels,
            "num_classes": cfg.num_classes, "spatial_dims": cfg.spatial_dims, "image_size": cfg.image_size}
    if cfg.model_args:  # a MONAI network's own arguments (shared/models/bundle.py)
        meta["model_args"] = cfg.model_args
    if cfg.defence_models:  # a defence comparison: one member per method (see shared/models/members.py)
        meta["members"] = list(cfg.defence_model_names)
    return meta


def build_task_model(meta: dict[str, Any]) -> nn.Module:
    """The classifier or segmenter ``meta`` (see :func:`model_meta`) describes."""
    if meta.get("task", "classification") == "segmentation":
        from ..segmentation import build_segmenter

        return build_segmenter(meta["model"], spatial_dims=meta["spatial_dims"], in_channels=meta["in_channels"],
                               num_classes=meta["num_classes"], norm=meta["norm"])
    from . import build_model

    if meta.get("members"):
        from .members import MemberSet

        return MemberSet(list(meta["members"]), lambda: build_task_model({**meta, "members": None}))
    return build_model(meta["model"], in_channels=meta["in_channels"], num_classes=meta["num_classes"],
                       spatial_dims=meta["spatial_dims"], norm=meta["norm"], image_size=meta.get("image_size", 28),
                       model_args=meta.get("model_args", ""))
