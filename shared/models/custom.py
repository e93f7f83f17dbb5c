"""Bring your own model (``model = "package.module:factory"``) and start from your own weights.

A hospital consortium often has its own network or a pretrained one. The factory is imported
by its path and called with the keywords it accepts of ``in_channels``, ``num_classes``,
``spatial_dims``, ``image_size`` and ``norm``; it must return a ``torch.nn.Module`` whose
output is ``(N, num_classes)`` logits. Weights come from a local file: a torch state dict
(or a checkpoint dict holding one under ``state_dict``/``model``) or a MONAI bundle folder
(``models/model.pt``; its ``network_def``, read restrictedly, is the model: :mod:`.bundle`). Both
are checked before a run starts (:mod:`fedaegis.shared.run.preflight`).
Only the coordinator reads the weights file: sites receive them as the first global model.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

FACTORY_KEYWORDS = ("in_channels", "num_classes", "spatial_dims", "image_size", "norm")


def load_factory(path: str):
    """The callable ``package.module:factory`` names; ValueError naming what is wrong."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in (*module_name.split("."), *attr.split("."))):
        raise ValueError(f"model: {path!r} is not 'package.module:factory'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model: cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model: {path!r} is not callable")
    return obj


def build_custom(path: str, *, in_channels: int, num_classes: int, spatial_dims: int, norm: str,
                 image_size: int) -> nn.Module:
    """Call the factory with the keywords it takes; check it returns a module."""
    factory = load_factory(path)
    given = {"in_channels": in_channels, "num_classes": num_classes, "spatial_dims": spatial_dims,
             "image_size": image_size, "norm": norm}
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = given if takes_all else {k: v for k, v in given.items() if k in params}
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        kwargs = {}
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is reported as one line
        raise ValueError(f"model: {path}({', '.join(kwargs)}) failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: {path} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_outputs(model: nn.Module, *, in_channels: int, num_classes: int, spatial_dims: int, image_size: int) -> None:
    """One forward pass on a blank batch: the model must give (N, num_classes) logits."""
    x = torch.zeros(2, in_channels, *(image_size,) * spatial_dims)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"model: a forward pass on {tuple(x.shape)} inputs fails ({type(exc).__name__}: {exc})") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: gives {shape} for {tuple(x.shape)} inputs; expected (2, {num_classes}) logits")


def weights_file(path: str | Path) -> Path:
    """The state-dict file ``path`` names: itself, or a MONAI bundle folder's ``models/model.pt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        model_pt = path / "models" / "model.pt"
        if not (path / "configs").is_dir() or not model_pt.is_file():
            raise ValueError(f"weights: {path} is a folder but not a MONAI bundle with models/model.pt "
                             "(and configs/)")
        return model_pt
    if not path.is_file():
        raise ValueError(f"weights: {path} not found")
    return path


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` (see :func:`weights_file`) into ``model``: every tensor must match by name and shape."""
    file = weights_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of all kinds mean "not a state dict"
        raise ValueError(f"weights: {file} is not a torch state dict ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):  # checkpoints of common trainers wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights: {file} holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ValueError(f"weights: {file} does not fit the model: {what} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"weights: {file}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                         f"the model's is {tuple(own[wrong[0]].shape)}")
    model.load_state_dict(state)
    return model
