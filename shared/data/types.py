"""The in-memory form every loader returns, and the one error type for bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


class DataValidationError(ValueError):
    """Bad input data. The message always names the file or field at fault."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


#: The most input values (channels x spatial size) one batch of model inputs holds at a site:
#: 2**21, 8 MB of float32. A model's activations grow with it, so at large sizes fewer images go
#: into each evaluation or attack batch (224 px: 41 images, so that PGD on the 32-channel CNN stays
#: within the 2 GB a site actor is meant to need); at 128 px and below, single-channel, nothing changes.
BATCH_VALUES = 2 ** 21


def batch_for(item_shape: Sequence[int], cap: int) -> int:
    """Images per batch: ``cap``, or fewer where ``cap`` inputs of ``item_shape`` would exceed :data:`BATCH_VALUES`."""
    values = 1
    for side in item_shape:
        values *= max(1, int(side))
    return max(1, min(int(cap), BATCH_VALUES // values))


class LazyImages:
    """Images as stored (uint8, 16-bit, ...) that index like a float32 (N, C, *spatial) tensor.

    ``images[idx]`` and ``images.split(n)`` run ``pipeline`` (see :mod:`.transforms`) on just
    those items, so a site never holds its whole set as float32; ``to(device)`` keeps the stored
    images where they are and delivers each batch on ``device`` (the pipeline runs on the CPU, so
    a batch's values do not depend on the device). Anything else a tensor can do works too, on the
    whole set made at once: meant for small sets only, such as an attack subset; site code takes
    such a subset (:meth:`take`) and calls :meth:`materialize` on it, never on a whole split.
    """

    def __init__(self, stored: torch.Tensor, pipeline: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device | str = "cpu") -> None:
        self.stored = stored
        self.pipeline = pipeline
        self.device = torch.device(device)
        out = getattr(pipeline, "out_shape", None)
        self._item_shape = tuple(out(tuple(stored.shape[1:]))) if out else tuple(pipeline(stored[:1]).shape[1:])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((int(self.stored.shape[0]), *self._item_shape))

    dtype = torch.float32

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    ndim = property(dim)

    def __len__(self) -> int:
        return int(self.stored.shape[0])

    def __getitem__(self, index: Any) -> torch.Tensor:
        rest: tuple = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        if isinstance(index, torch.Tensor) and index.device != self.stored.device:
            index = index.to(self.stored.device)  # labels' masks and indices may live on the model's device
        if isinstance(index, int):
            out = self._made(self.stored[index : index + 1 if index != -1 else None])[0]
            return out[rest] if rest else out
        out = self._made(self.stored[index])
        return out[(slice(None), *rest)] if rest else out

    def _made(self, stored: torch.Tensor) -> torch.Tensor:
        out = self.pipeline(stored)
        return out if out.device == self.device else out.to(self.device)

    def take(self, index: Any) -> LazyImages:
        """The items at ``index``, still stored (for :meth:`ImageSet.subset`)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.stored.device)
        return LazyImages(self.stored[index], self.pipeline, self.device)

    def to(self, device: torch.device | str) -> LazyImages:
        """These images with each batch delivered on ``device`` (the stored images stay put)."""
        return self if torch.device(device) == self.device else LazyImages(self.stored, self.pipeline, device)

    def split(self, size: int) -> Batches:
        """Batches of ``size`` items, each made when it is drawn (``Tensor.split`` would hold them all)."""
        return Batches(self, size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.split(256):
            yield from batch

    def materialize(self) -> torch.Tensor:
        """The whole set as one float32 tensor (what eager loading kept in memory)."""
        out = torch.empty(self.shape, device=self.device)
        for i in range(0, len(self), 256):  # filled in place: never the whole set twice
            out[i : i + 256] = self[i : i + 256]
        return out

    def __array__(self, dtype: Any = None) -> Any:
        array = self.materialize().numpy()
        return array if dtype is None else array.astype(dtype)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        def real(value: Any) -> Any:
            if isinstance(value, LazyImages):
                return value.materialize()
            if isinstance(value, (list, tuple)):
                return type(value)(real(v) for v in value)
            return value

        return func(*real(args), **{k: real(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("stored", "pipeline", "device", "_item_shape"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __repr__(self) -> str:
        return f"LazyImages(stored={tuple(self.stored.shape)} {self.stored.dtype}, inputs={tuple(self.shape)})"


class Batches(Sequence[torch.Tensor]):
    """``LazyImages.split(size)``: a sequence of batches, each made from the stored images when it is drawn."""

    def __init__(self, images: LazyImages, size: int) -> None:
        if size < 1:
            raise ValueError(f"size: must be >= 1, got {size}")
        self.images, self.size = images, int(size)

    def __len__(self) -> int:
        return -(-len(self.images) // self.size)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError("Batches: index with an int")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.images[index * self.size : (index + 1) * self.size]


@dataclass
class ImageSet:
    """A labelled set of images held by one site.

    ``images`` is float32 in [0, 1], shaped (N, C, H, W) or (N, C, D, H, W): a tensor, or
    :class:`LazyImages` that makes each indexed batch from the stored images;
    ``labels`` is int64 (N,). ``skipped`` maps each file that could not be used to
    the reason; it stays at the site, only its length is ever reported.
    """

    images: torch.Tensor | LazyImages
    labels: torch.Tensor
    num_classes: int
    source: str
    skipped: dict[str, str] = field(default_factory=dict)
    #: each loaded file's longer side before resizing (folders), for choosing ``image-size``
    native_sides: tuple[int, ...] = ()
    #: each sample's patient (or series); splits never put one patient on both sides ((): each its own)
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataValidationError(
                self.source,
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels",
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def spatial_dims(self) -> int:
        return self.images.dim() - 2

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, indices: torch.Tensor | list[int]) -> ImageSet:
        """The samples at ``indices``; the skip record is kept with the subset."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = self.images.take(idx) if isinstance(self.images, LazyImages) else self.images[idx]
        groups = tuple(self.groups[i] for i in idx.tolist()) if self.groups else ()
        return ImageSet(images, self.labels[idx], self.num_classes, self.source, dict(self.skipped), groups=groups)

    def eager(self) -> ImageSet:
        """These samples with their images as one float32 tensor (the same values as drawn batch by batch).

        For small sets only (an attack's or a detector's calibration subset): a site's splits stay as stored.
        """
        if not isinstance(self.images, LazyImages):
            return self
        return ImageSet(self.images.materialize(), self.labels, self.num_classes, self.source, dict(self.skipped),
                        native_sides=self.native_sides, groups=self.groups)


# --- helpers shared by the loaders -------------------------------------------------------------

#: ITU-R BT.601 luma weights, the same ones Pillow uses for RGB -> "L".
_LUMA = (0.299, 0.587, 0.114)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Give (N, C, ...) images ``channels`` channels, so every site matches the model's input.

    Grey -> RGB repeats the channel; RGB -> grey takes the BT.601 luma.
    """
    have = int(images.shape[1])
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, *images.shape[2:]).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=images.dtype).view(1, 3, *([1] * (images.dim() - 2)))
        return (images * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"channels: cannot turn {have}-channel images into {channels} channels")


def resize_images(images: torch.Tensor, size: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Resize (N, C, H, W) or (N, C, D, H, W) images to ``size``, keeping values in [0, 1].

    2D uses antialiased bilinear interpolation, so a 1024^2 radiograph shrunk to 28^2 is
    averaged rather than aliased; 3D uses area averaging when shrinking, trilinear otherwise.
    """
    size = tuple(int(s) for s in size)
    spatial = tuple(images.shape[2:])
    if len(size) != len(spatial):
        raise ValueError(f"image_size: {size} has {len(size)} dims, images have {len(spatial)}")
    if any(s < 1 for s in size):
        raise ValueError(f"image_size: every size must be >= 1, got {size}")
    if size == spatial:
        return images
    x = images.float()
    if len(size) == 2:
        out = torch.nn.functional.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=True
        )
    elif all(s <= t for s, t in zip(size, spatial, strict=True)):
        out = torch.nn.functional.interpolate(x, size=size, mode="area")
    else:
        out = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    return out.clamp_(0.0, 1.0)
