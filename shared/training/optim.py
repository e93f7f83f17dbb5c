"""The one optimiser factory of local training (plain, hardened, DP-SGD and segmentation alike).

SGD always carries momentum 0.9, so switching a defence on never silently changes the
optimiser underneath it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adam", "sgd")


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum 0.9, at learning rate ``lr``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {name!r}")
