"""BadNets-style backdoor (Gu et al., 2017): a small patch that flips predictions to a target.

A malicious site stamps the trigger on a share of its training images and relabels
them to ``target_class``; the shared model learns "patch => target" while its clean
accuracy barely moves, which is why clean-accuracy monitoring cannot see it. The
attack success rate (ASR) is measured on test images of the *other* classes with the
trigger stamped, and reported as two counts only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch
from torch import nn

from ..data import ImageSet
from ..data.types import LazyImages

Corner = Literal["bottom-right", "bottom-left", "top-right", "top-left"]


@dataclass(frozen=True)
class Trigger:
    """A square patch: ``pattern`` 'square' (solid ``value``) or 'checkerboard' (value/1-value).

    ``location`` is a corner name or explicit (row, col) of the patch's top-left pixel,
    ``margin`` pixels away from the corner's edges.
    """

    size: int = 3
    value: float = 1.0
    pattern: Literal["square", "checkerboard"] = "checkerboard"
    location: Corner | tuple[int, int] = "bottom-right"
    margin: int = 1

    def patch(self, channels: int) -> torch.Tensor:
        if self.pattern == "square":
            tile = torch.full((self.size, self.size), float(self.value))
        elif self.pattern == "checkerboard":
            idx = torch.arange(self.size)
            tile = torch.where((idx[:, None] + idx[None, :]) % 2 == 0, float(self.value), 1.0 - float(self.value))
        else:
            raise ValueError(f"pattern: unknown trigger pattern {self.pattern!r} (use 'square' or 'checkerboard')")
        return tile.expand(channels, self.size, self.size)

    def origin(self, height: int, width: int) -> tuple[int, int]:
        if isinstance(self.location, tuple):
            row, col = self.location
        else:
            far_r, far_c = height - self.size - self.margin, width - self.size - self.margin
            row = self.margin if self.location.startswith("top") else far_r
            col = self.margin if self.location.endswith("left") else far_c
        if not (0 <= row <= height - self.size and 0 <= col <= width - self.size):
            raise ValueError(f"location: a {self.size}px trigger at {(row, col)} leaves the {height}x{width} image")
        return row, col


def stamp_trigger(images: torch.Tensor, trigger: Trigger | None = None) -> torch.Tensor:
    """A copy of ``images`` (N, C, H, W) or (N, C, D, H, W) with the patch on every image.

    For 3D volumes the patch is stamped on every slice along the depth axis.
    """
    trigger = trigger or Trigger()
    if images.dim() not in (4, 5):
        raise ValueError(f"images: expected (N, C, H, W) or (N, C, D, H, W), got shape {tuple(images.shape)}")
    out = images.clone()
    h, w = images.shape[-2:]
    row, col = trigger.origin(h, w)
    patch = trigger.patch(images.shape[1]).to(images.dtype)
    if images.dim() == 5:
        patch = patch[:, None]
    out[..., row : row + trigger.size, col : col + trigger.size] = patch
    return out


class Poisoned(NamedTuple):
    images: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor  # bool (N,): which samples were stamped and relabelled (stays at the site)


def poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    target_class: int,
    poison_fraction: float = 0.1,
    trigger: Trigger | None = None,
    seed: int = 0,
) -> Poisoned:
    """Stamp ``poison_fraction`` of all samples (drawn from the non-target classes) and relabel them.

    Target-class samples are never drawn: relabelling them would change nothing.
    """
    if not 0 <= poison_fraction <= 1:
        raise ValueError(f"poison_fraction: must be in [0, 1], got {poison_fraction}")
    candidates = torch.nonzero(labels != target_class).flatten()
    count = min(len(candidates), round(poison_fraction * len(labels)))
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=gen)[:count]]
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[chosen] = True
    out_images, out_labels = images.clone(), labels.clone()
    out_images[mask] = stamp_trigger(images[mask], trigger)
    out_labels[mask] = target_class
    return Poisoned(out_images, out_labels, mask)


def poison_imageset(data: ImageSet, **kwargs: object) -> ImageSet:
    """:func:`poison` for a site's :class:`ImageSet` (same arguments)."""
    poisoned = poison(data.images, data.labels, **kwargs)  # type: ignore[arg-type]
    return replace(data, images=poisoned.images, labels=poisoned.labels)


@torch.inference_mode()
def backdoor_counts(
    model: nn.Module,
    images: torch.Tensor | LazyImages,
    labels: torch.Tensor,
    *,
    target_class: int,
    trigger: Trigger | None = None,
    batch_size: int = 256,
) -> dict[str, int]:
    """Counts for the attack success rate: triggered non-target test images classified as target.

    ASR = backdoor.hit-count / backdoor.num-examples, summed over sites before dividing.
    """
    was_training = model.training
    model.eval()
    keep = labels != target_class
    hits = 0
    for chunk in keep.nonzero().squeeze(1).split(batch_size):  # one batch made (or indexed) at a time
        hits += int((model(stamp_trigger(images[chunk], trigger)).argmax(1) == target_class).sum())
    model.train(was_training)
    return {"backdoor.num-examples": int(keep.sum()), "backdoor.hit-count": hits}
