"""MedMNIST ``.npz`` files (official layout) -> :class:`ImageSet`.

Files come from many re-uploads, so every assumption about them is checked and a bad file
fails with a :class:`DataValidationError` naming the file and the key at fault.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .transforms import InputPipeline
from .types import DataValidationError, ImageSet, LazyImages

SPLITS = ("train", "val", "test")

# Errors numpy raises for a corrupt archive or member.
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError)


def load_medmnist(
    path: str | Path, split: str = "train", num_classes: int | None = None
) -> ImageSet:
    """Load one split of a MedMNIST file as float images in [0, 1] and int64 labels.

    The images stay as stored (uint8) in a :class:`LazyImages`; each batch becomes float32
    in [0, 1] when it is indexed (x / 255, the same numbers as converting all at once).

    Images (N,H,W) -> (N,1,H,W), (N,H,W,3) -> (N,3,H,W), (N,D,H,W) -> (N,1,D,H,W).
    Labels may be (N,1) (official) or (N,) (re-saved copies such as BreastMNIST).
    ``num_classes`` defaults to 1 + the largest label over *all* splits in the file, so the
    splits of one file agree even when a split lacks the last class.
    """
    path = Path(path)
    if split not in SPLITS:
        raise DataValidationError(path, f"unknown split {split!r}; expected one of {SPLITS}")
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    # Opened here, not by np.load, which leaks the handle when the archive is corrupt.
    with path.open("rb") as handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise DataValidationError(path, f"not a readable .npz archive ({exc})") from exc
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataValidationError(path, "not an .npz archive (a single .npy array)")
        with archive:
            images = _member(archive, path, f"{split}_images")
            labels = _labels(_member(archive, path, f"{split}_labels"), path, split)
            if num_classes is None:
                num_classes = _infer_num_classes(archive, path, labels)
    if images.shape[0] != labels.shape[0]:
        raise DataValidationError(
            path,
            f"{split}_images has {images.shape[0]} images but {split}_labels has "
            f"{labels.shape[0]} labels",
        )
    if labels.shape[0] == 0:
        raise DataValidationError(path, f"split {split!r} is empty")
    if num_classes < 1:
        raise DataValidationError(path, f"num_classes must be >= 1, got {num_classes}")
    if labels.max() >= num_classes:
        raise DataValidationError(
            path,
            f"{split}_labels: label {int(labels.max())} is out of range for "
            f"num_classes={num_classes}",
        )
    stored, scale = _images_to_tensor(images, path, f"{split}_images")
    return ImageSet(
        images=LazyImages(stored, InputPipeline(scale=scale)),
        labels=torch.from_numpy(labels),
        num_classes=int(num_classes),
        source=f"{path}:{split}",
    )


def _member(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    if key not in archive.files:
        raise DataValidationError(path, f"missing key {key!r} (keys: {sorted(archive.files)})")
    try:
        return np.asarray(archive[key])
    except _READ_ERRORS as exc:
        raise DataValidationError(path, f"key {key!r} cannot be read ({exc})") from exc


def _labels(raw: np.ndarray, path: Path, split: str) -> np.ndarray:
    """(N,1) or (N,) integer-valued labels -> int64 (N,)."""
    key = f"{split}_labels"
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    elif raw.ndim != 1:
        raise DataValidationError(
            path, f"{key} has shape {raw.shape}; expected (N,) or (N,1) (multi-label unsupported)"
        )
    if raw.dtype == np.bool_:
        raw = raw.astype(np.int64)
    if np.issubdtype(raw.dtype, np.floating):
        bad = ~np.isfinite(raw) | (raw != np.round(raw))
        if bad.any():
            raise DataValidationError(
                path, f"{key}: non-integer label {raw[bad][0].item()!r} in split {split!r}"
            )
    elif not np.issubdtype(raw.dtype, np.integer):
        raise DataValidationError(path, f"{key} has dtype {raw.dtype}; expected integers")
    if raw.size and raw.min() < 0:
        raise DataValidationError(
            path, f"{key}: negative label {raw.min().item()!r} in split {split!r}"
        )
    return raw.astype(np.int64)


def _infer_num_classes(archive: np.lib.npyio.NpzFile, path: Path, labels: np.ndarray) -> int:
    top = int(labels.max()) if labels.size else -1
    for other in SPLITS:
        key = f"{other}_labels"
        if key in archive.files:
            more = _labels(_member(archive, path, key), path, other)
            if more.size:
                top = max(top, int(more.max()))
    return top + 1


def _images_to_tensor(images: np.ndarray, path: Path, key: str) -> tuple[torch.Tensor, float]:
    """uint8 (or float in [0,1]) arrays -> (N, C, *spatial) as stored, and the value meaning 1.0."""
    if images.ndim == 3:  # (N, H, W) grey
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):  # (N, H, W, C)
        images = np.moveaxis(images, -1, 1)
    elif images.ndim == 4 and images.shape[-1] in (2, 4):
        raise DataValidationError(
            path, f"{key} has shape {images.shape}: {images.shape[-1]} channels; expected 1 or 3"
        )
    elif images.ndim == 4:  # (N, D, H, W) volumes
        images = images[:, None]
    elif images.ndim == 5 and images.shape[-1] == 1:  # (N, D, H, W, 1)
        images = np.moveaxis(images, -1, 1)
    else:
        raise DataValidationError(
            path,
            f"{key} has shape {images.shape}; expected (N,H,W), (N,H,W,3) or (N,D,H,W)",
        )
    if images.dtype == np.bool_:
        out, scale = images.astype(np.uint8), 1.0
    elif np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataValidationError(
                path, f"{key}: integer pixel values outside 0..255 (dtype {images.dtype})"
            )
        out, scale = images.astype(np.uint8, copy=False), 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataValidationError(path, f"{key} contains NaN or infinite values")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise DataValidationError(
                path, f"{key}: float pixel values outside [0, 1] (min {images.min()}, "
                f"max {images.max()})"
            )
        out, scale = images.astype(np.float32), 1.0
    else:
        raise DataValidationError(path, f"{key} has unsupported dtype {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(out)), scale
