"""A site folder of 2D images (one sub-folder per class) -> :class:`ImageSet`.

Hospitals export whatever they have: PNG/JPEG/BMP/TIFF, DICOM, NIfTI slices, plus stray
notes. Each file that cannot be used is skipped and recorded with its reason rather than
aborting the whole site; only a site with no usable image at all is an error.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
from PIL import Image

from .dicom import Window, check_window, read_dicom_image
from .labelled import Reader, load_labelled_files
from .nifti import is_nifti, load_nifti
from .types import DataValidationError, ImageSet

__all__ = ["load_image_folder", "load_labelled_files"]
PIL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})


def load_image_folder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | None = (28, 28),
    channels: int = 1,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
    window: Window = "auto",
) -> ImageSet:
    """Load ``root/<class>/**/<image>`` as float images in [0, 1], (N, channels, *image_size).

    Class indices: the position in ``class_names`` when given (so every site maps classes
    alike even if one lacks a class); else the folder name itself when all names are
    integers ("0", "1", ...); else the sorted folder names. ``expected_modality``,
    ``expected_body_part`` and ``window`` apply to DICOM files (see :func:`read_dicom_image`);
    NIfTI slices are min-max scaled, as they carry no display window. ``image_size=None``
    keeps the native size, skipping images whose size differs from the first one.
    """
    window = check_window(window)

    def dicom(path: Path) -> np.ndarray:
        return read_dicom_image(
            path,
            expected_modality=expected_modality,
            expected_body_part=expected_body_part,
            window=window,
        )

    def reader_for(path: Path) -> Reader | None:
        name = path.name.lower()
        suffix = path.suffix.lower()
        if suffix in PIL_SUFFIXES:
            return _read_pil
        if suffix in DICOM_SUFFIXES:
            return dicom
        if is_nifti(name):
            return _read_nifti_2d
        return dicom if _has_dicom_magic(path) else None

    return load_labelled_files(
        root,
        reader_for=reader_for,
        labels=None,
        class_names=class_names,
        num_classes=num_classes,
        image_size=image_size,
        channels=channels,
    )


def _has_dicom_magic(path: Path) -> bool:
    """DICOM Part 10 files carry "DICM" after a 128-byte preamble, whatever they are named."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise DataValidationError(path, f"multi-page image ({image.n_frames} pages)")
            image.load()
            if image.mode in _COLOUR_MODES:
                return np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
            if image.mode.startswith("I;16") or image.mode == "I":
                data = np.asarray(image, dtype=np.float32)
                return np.clip(data / np.float32(65535), 0.0, 1.0)
            if image.mode == "F":
                return _min_max(np.asarray(image, dtype=np.float32), path)
            return np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255)
    except DataValidationError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataValidationError(
            path, f"not a readable image ({type(exc).__name__}: {exc})"
        ) from exc


def _read_nifti_2d(path: Path) -> np.ndarray:
    return _min_max(load_nifti(path, ndim=2), path)


def _min_max(data: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(data).all():
        raise DataValidationError(path, "image contains NaN or infinite values")
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return ((data - lo) / (hi - lo)).astype(np.float32)
