"""Hippocampus MRI (MSD Task04) for segmentation, split by patient into simulated hospitals.

Every volume is one patient. Splitting by volume, never by slice, keeps a patient's slices
out of two sites (or out of both a site's training and test split): adjacent slices are
near-duplicates, so a slice-level split would leak and inflate Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize, ResizeWithPadOrCrop

from ..data import DataValidationError, load_nifti_pairs

NUM_CLASSES = 3  # 0 background, 1 anterior, 2 posterior hippocampus
CLASS_NAMES = ("background", "anterior", "posterior")
#: (x, y, z) after pad/crop: the hippocampus crops are ~35x50x36 voxels, with the structure
#: centred, and every side is divisible by 8 as a 3-level UNet needs.
DEFAULT_SIZE_3D = (32, 48, 32)
#: Volumes used by the small-data mode (tests, quick runs): enough for 4 sites with a
#: held-out patient each, small enough to train in seconds on a CPU.
SMALL_VOLUMES = 24
RESIZE_MODES = ("pad_crop", "resize")


@dataclass
class SegmentationSet:
    """Images and masks of one site (or one split of it).

    ``images`` float32 in [0, 1], (N, 1, H, W) slices or (N, 1, D, H, W) volumes;
    ``masks`` int64 (N, H, W) or (N, D, H, W); ``volume_index`` int64 (N,) says which of
    ``patient_ids`` each sample comes from (for 3D it is ``arange(N)``). Patient ids stay at
    the site: metrics are reduced per volume and then summed, never reported per patient.
    """

    images: torch.Tensor
    masks: torch.Tensor
    volume_index: torch.Tensor
    patient_ids: tuple[str, ...]
    num_classes: int = NUM_CLASSES
    source: str = ""

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.masks.shape[0] != n or self.volume_index.shape[0] != n:
            raise DataValidationError(self.source, "images, masks and volume_index differ in length")
        if tuple(self.masks.shape[1:]) != tuple(self.images.shape[2:]):
            raise DataValidationError(
                self.source, f"mask shape {tuple(self.masks.shape)} != image shape {tuple(self.images.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def spatial_dims(self) -> int:
        return self.images.dim() - 2

    @property
    def num_volumes(self) -> int:
        return len(self.patient_ids)

    def select_volumes(self, volumes: Sequence[int]) -> SegmentationSet:
        """The samples of the given volumes (positions in ``patient_ids``), re-indexed from 0."""
        volumes = [int(v) for v in volumes]
        remap = torch.full((self.num_volumes,), -1, dtype=torch.long)
        remap[torch.as_tensor(volumes, dtype=torch.long)] = torch.arange(len(volumes))
        keep = remap[self.volume_index] >= 0
        # keep volume order as given, samples of a volume in their original order
        order = torch.argsort(remap[self.volume_index[keep]], stable=True)
        idx = keep.nonzero().squeeze(1)[order]
        return SegmentationSet(
            self.images[idx], self.masks[idx], remap[self.volume_index[idx]],
            tuple(self.patient_ids[v] for v in volumes), self.num_classes, self.source,
        )


@dataclass
class SiteData:
    """One simulated hospital: its training patients and its held-out test patients."""

    train: SegmentationSet
    test: SegmentationSet


def preprocess_volume(
    image: np.ndarray,
    label: np.ndarray,
    size: Sequence[int] = DEFAULT_SIZE_3D,
    resize_mode: str = "pad_crop",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale one volume to [0, 1] and bring it to ``size``; returns (1, *size) float, (*size) int64.

    Intensities are clipped at the volume's own 0.5/99.5 percentiles: MRI has no absolute
    scale, and the raw files mix uint8 and float ranges (up to ~2800), so a per-volume
    scale is the only comparable one. ``pad_crop`` keeps the 1 mm voxels (centre crop);
    ``resize`` interpolates (nearest for labels), e.g. for a tiny 3D smoke-test volume.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode: must be one of {RESIZE_MODES}, got {resize_mode!r}")
    size = tuple(int(s) for s in size)
    if image.ndim == 4:  # (x, y, z, 1 channel) stored with a channel axis
        image = image[..., 0]
    # np.percentile, not MONAI's ScaleIntensityRangePercentiles: same result, ~100x faster
    # (torch.quantile dominates loading otherwise).
    lo, hi = np.percentile(image, (0.5, 99.5))
    img = np.clip((image[None].astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    lab = label[None].astype(np.float32)
    if resize_mode == "pad_crop":
        img, lab = ResizeWithPadOrCrop(size)(img), ResizeWithPadOrCrop(size)(lab)
    else:
        img = Resize(size, mode="trilinear", anti_aliasing=True)(img)
        lab = Resize(size, mode="nearest")(lab)
    img_t = torch.as_tensor(np.asarray(img), dtype=torch.float32).clamp_(0.0, 1.0)
    lab_t = torch.as_tensor(np.asarray(lab)[0]).round().long()
    return img_t, lab_t


def load_hippocampus(
    root: str | Path,
    *,
    spatial_dims: int = 2,
    size: Sequence[int] = DEFAULT_SIZE_3D,
    resize_mode: str = "pad_crop",
    max_volumes: int | None = None,
    slice_axis: int = 2,
    min_foreground: int = 1,
    seed: int = 0,
) -> SegmentationSet:
    """All (or ``max_volumes`` seeded-random) volumes of an MSD-layout folder as one set.

    ``root`` holds ``imagesTr`` and ``labelsTr``. 2D takes the slices along ``slice_axis``
    (default z, giving 32x48 slices) with at least ``min_foreground`` labelled voxels:
    background-only slices would dominate training and make Dice undefined.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: must be 2 or 3, got {spatial_dims}")
    if len(size) != 3:
        raise ValueError(f"size: need a 3D size (x, y, z), got {tuple(size)}")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis: must be 0, 1 or 2, got {slice_axis}")
    root = Path(root)
    pairs = load_nifti_pairs(root / "imagesTr", root / "labelsTr", num_classes=NUM_CLASSES)
    order = np.random.default_rng(seed).permutation(len(pairs))
    if max_volumes is not None:
        if max_volumes < 1:
            raise ValueError(f"max_volumes: must be >= 1, got {max_volumes}")
        order = np.sort(order[:max_volumes])
    else:
        order = np.arange(len(pairs))
    images, masks, vol_idx, ids = [], [], [], []
    for i in order:
        pair = pairs[int(i)]
        img, lab = preprocess_volume(pair.image, pair.label, size, resize_mode)
        if spatial_dims == 3:
            img_s, lab_s = img[None], lab[None]
        else:
            img_s = img.movedim(slice_axis + 1, 0)  # (S, 1, H, W)
            lab_s = lab.movedim(slice_axis, 0)  # (S, H, W)
            keep = (lab_s > 0).flatten(1).sum(1) >= min_foreground
            img_s, lab_s = img_s[keep], lab_s[keep]
            if len(img_s) == 0:  # nothing labelled left after the crop: not a usable patient
                continue
        vol_idx.append(torch.full((len(img_s),), len(ids), dtype=torch.long))
        ids.append(pair.name.split(".nii")[0])
        images.append(img_s)
        masks.append(lab_s)
    if not ids:
        raise DataValidationError(root, f"no volume has {min_foreground} labelled voxels in a slice")
    return SegmentationSet(
        torch.cat(images).contiguous(), torch.cat(masks).contiguous(), torch.cat(vol_idx),
        tuple(ids), NUM_CLASSES, str(root),
    )


def split_patients(
    num_volumes: int, num_sites: int, *, test_fraction: float = 0.2, seed: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Seeded (train, test) volume indices per site; every volume lands in exactly one place.

    Sites get near-equal shares; each site holds out ``test_fraction`` of its own patients
    (at least one when it has two or more), so every hospital is evaluated on patients it
    never trained on.
    """
    if num_sites < 1:
        raise ValueError(f"num_sites: must be >= 1, got {num_sites}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction: must be in [0, 1), got {test_fraction}")
    if num_volumes < num_sites:
        raise ValueError(f"num_sites: {num_sites} sites but only {num_volumes} volumes")
    perm = np.random.default_rng(seed).permutation(num_volumes)
    out = []
    for share in np.array_split(perm, num_sites):
        n_test = int(round(test_fraction * len(share)))
        if test_fraction > 0 and len(share) >= 2:
            n_test = min(max(n_test, 1), len(share) - 1)
        test, train = sorted(share[:n_test].tolist()), sorted(share[n_test:].tolist())
        out.append((train, test))
    return out


def split_sites(
    data: SegmentationSet, num_sites: int, *, test_fraction: float = 0.2, seed: int = 0
) -> list[SiteData]:
    """Partition a set by patient into ``num_sites`` hospitals with a held-out test split each."""
    return [
        SiteData(data.select_volumes(train), data.select_volumes(test))
        for train, test in split_patients(data.num_volumes, num_sites, test_fraction=test_fraction, seed=seed)
    ]


def load_site_segmentation(
    root: str | Path,
    site: int,
    num_sites: int,
    *,
    max_volumes: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    **load_kwargs: object,
) -> SiteData:
    """The share of simulated hospital ``site`` (0-based), as a ClientApp would load it.

    ``max_volumes=SMALL_VOLUMES`` is the small-data mode. Mind the minimum cell size: a
    site's evaluation groups count patients, so a test split smaller than
    ``min-cell-size`` volumes is suppressed; all 260 volumes over 5 sites give 10 each.
    """
    if not 0 <= site < num_sites:
        raise ValueError(f"site: must be in [0, {num_sites}), got {site}")
    data = load_hippocampus(root, max_volumes=max_volumes, seed=seed, **load_kwargs)  # type: ignore[arg-type]
    return split_sites(data, num_sites, test_fraction=test_fraction, seed=seed)[site]
