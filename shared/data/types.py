"""The in-memory form every loader returns, and the one error type for bad input."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DataValidationError(ValueError):
    """Bad input data. The message always names the file or field at fault."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@dataclass
class ImageSet:
    """A labelled set of images held by one site.

    ``images`` is float32 in [0, 1], shaped (N, C, H, W) or (N, C, D, H, W);
    ``labels`` is int64 (N,). ``skipped`` maps each file that could not be used to
    the reason; it stays at the site, only its length is ever reported.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    source: str
    skipped: dict[str, str] = field(default_factory=dict)

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
        return ImageSet(
            self.images[idx], self.labels[idx], self.num_classes, self.source, dict(self.skipped)
        )


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
