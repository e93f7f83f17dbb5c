"""Data and update transforms around the training loop, composed from the run config.

A data transform changes what a site trains on (in simulation, a compromised site's
poisoning); an update transform changes what it sends (pruning, a defence; boosting,
a simulated model-replacement threat). Each is a plain function, applied in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch

from ..run.config import RunConfig
from ..data import ImageSet

DataTransform = Callable[[ImageSet], ImageSet]
UpdateTransform = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


def data_transforms(cfg: RunConfig, malicious: bool, seed: int) -> list[DataTransform]:
    """Poisoning (``threat`` = backdoor or label-flip) for a simulated compromised site; nothing otherwise."""
    if not malicious or cfg.threat == "none":
        return []
    from ..threats import Trigger, flip_imageset, poison_imageset

    if cfg.threat == "backdoor":
        return [partial(poison_imageset, target_class=cfg.target_class, poison_fraction=cfg.poison_fraction,
                        trigger=Trigger(size=cfg.trigger_size), seed=seed)]
    return [partial(flip_imageset, fraction=cfg.poison_fraction, seed=seed)]


def update_transforms(cfg: RunConfig, malicious: bool) -> list[UpdateTransform]:
    """Pruning (``prune-fraction``) at every site, then boosting (``boost``) at a simulated compromised one."""
    out: list[UpdateTransform] = []
    if cfg.prune_fraction:
        from ..privacy import prune_update

        out.append(partial(_update, prune_update, cfg.prune_fraction))
    if malicious and cfg.boost != 1:
        from ..threats import boost_update

        out.append(partial(_update, boost_update, cfg.boost))
    return out


def _update(fn: Callable, arg: float, global_state: Mapping[str, torch.Tensor],
            local_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return fn(global_state, local_state, arg)


def apply_data(data: ImageSet, transforms: Sequence[DataTransform]) -> ImageSet:
    for t in transforms:
        data = t(data)
    return data


def apply_updates(global_state: Mapping[str, torch.Tensor], local_state: Mapping[str, torch.Tensor],
                  transforms: Sequence[UpdateTransform]) -> dict[str, torch.Tensor]:
    state = dict(local_state)
    for t in transforms:
        state = t(global_state, state)
    return state
