"""NIfTI volumes (nibabel), and image/label pairs for segmentation, checked before use."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from .types import DataValidationError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiPair(NamedTuple):
    """One image volume and its label map, matched by file name."""

    name: str
    image: np.ndarray
    label: np.ndarray


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_nifti(
    path: str | Path,
    *,
    ndim: int | Collection[int] = (2, 3, 4),
    dtype: type[np.floating] | type[np.integer] | None = np.float32,
) -> np.ndarray:
    """Read a NIfTI file's voxel array (scaling applied), in file axis order (x, y, z[, c]).

    Trailing singleton axes are dropped first (a 2D slice is often stored as (H, W, 1)),
    then the number of dimensions must be one of ``ndim``. ``dtype=None`` keeps the stored
    type, which label maps need.
    """
    path = Path(path)
    allowed = {ndim} if isinstance(ndim, int) else set(ndim)
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    # nibabel and gzip raise many exception types for truncated or foreign files.
    except Exception as exc:  # noqa: BLE001
        raise DataValidationError(
            path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})"
        ) from exc
    while data.ndim > min(allowed, default=0) and data.ndim > 1 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in allowed:
        raise DataValidationError(
            path, f"volume has {data.ndim} dimensions {data.shape}; expected {sorted(allowed)}"
        )
    if data.size == 0:
        raise DataValidationError(path, f"volume is empty {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise DataValidationError(path, "volume contains NaN or infinite values")
    return data if dtype is None else data.astype(dtype, copy=False)


def load_nifti_pairs(
    images_dir: str | Path,
    labels_dir: str | Path,
    *,
    num_classes: int | None = None,
    allowed_labels: Collection[int] | None = None,
) -> list[NiftiPair]:
    """Image volumes and their label maps, matched by identical file name (MSD layout).

    An image without a label (or a label without an image) is an error, as is a label map
    whose shape differs from the image's spatial shape or that holds a value outside
    ``allowed_labels`` (default ``range(num_classes)`` when ``num_classes`` is given).
    Images are float32 (x, y, z[, channels]); labels int64 (x, y, z).
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataValidationError(folder, "folder not found")
    if allowed_labels is None and num_classes is not None:
        allowed_labels = range(num_classes)
    allowed = None if allowed_labels is None else np.asarray(sorted(set(allowed_labels)))
    images = _nifti_names(images_dir)
    labels = _nifti_names(labels_dir)
    if not images:
        raise DataValidationError(images_dir, "no NIfTI images (.nii / .nii.gz)")
    for name in images:
        if name not in labels:
            raise DataValidationError(images_dir / name, f"no label file {name!r} in {labels_dir}")
    for name in labels:
        if name not in images:
            raise DataValidationError(labels_dir / name, f"no image file {name!r} in {images_dir}")
    pairs = []
    for name in images:
        image = load_nifti(images_dir / name, ndim=(2, 3, 4))
        label = _label_map(labels_dir / name, allowed)
        if image.shape[: label.ndim] != label.shape:
            raise DataValidationError(
                labels_dir / name, f"label shape {label.shape} != image shape {image.shape}"
            )
        pairs.append(NiftiPair(name, image, label))
    return pairs


def _nifti_names(folder: Path) -> list[str]:
    # Hidden files include macOS "._name.nii.gz" resource forks shipped in some MSD tarballs.
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and is_nifti(p) and not p.name.startswith(".")
    )


def _label_map(path: Path, allowed: np.ndarray | None) -> np.ndarray:
    raw = load_nifti(path, ndim=(2, 3), dtype=None)
    if np.issubdtype(raw.dtype, np.floating):
        rounded = np.round(raw)
        if not np.array_equal(rounded, raw):
            raise DataValidationError(path, "label map holds non-integer values")
        raw = rounded
    label = raw.astype(np.int64)
    if allowed is not None:
        values = np.unique(label)
        bad = values[~np.isin(values, allowed)]
        if bad.size:
            raise DataValidationError(
                path, f"label values {bad.tolist()} not in allowed labels {allowed.tolist()}"
            )
    return label
