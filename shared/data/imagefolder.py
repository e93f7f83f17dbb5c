"""A site folder of 2D images (one sub-folder per class) -> :class:`ImageSet`.

Hospitals export whatever they have: PNG/JPEG/BMP/TIFF, DICOM, NIfTI slices, plus stray
notes. Each file that cannot be used is skipped and recorded with its reason rather than
aborting the whole site; only a site with no usable image at all is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dicom import Window, check_window, read_dicom_image
from .nifti import is_nifti, load_nifti
from .types import DataValidationError, ImageSet, resize_images, to_channels

Reader = Callable[[Path], np.ndarray]
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


def load_labelled_files(
    root: str | Path,
    *,
    reader_for: Callable[[Path], Reader | None],
    labels: Mapping[str, int | str] | None,
    class_names: list[str] | None,
    num_classes: int | None,
    image_size: tuple[int, int] | None,
    channels: int,
) -> ImageSet:
    """Shared engine of the folder loaders: find files, label them, read, resize, record skips.

    ``reader_for(path)`` returns the reader for a file, or None when it is no image type.
    Readers return (H, W) or (H, W, 3) float arrays in [0, 1].
    """
    root = Path(root)
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    if not root.is_dir():
        raise DataValidationError(root, "folder not found")
    files, skipped, num_classes = _label_files(root, labels, class_names, num_classes)
    images: list[torch.Tensor] = []
    targets: list[int] = []
    for path, label in files:
        key = path.relative_to(root).as_posix()
        reader = reader_for(path)
        if reader is None:
            skipped[key] = f"not a supported image file ({path.suffix or 'no suffix'})"
            continue
        try:
            image = _to_tensor(reader(path), channels, path)
        except DataValidationError as exc:
            skipped[key] = exc.problem
            continue
        except MemoryError:
            raise
        # One odd file must not take the whole site down; its error becomes the skip reason.
        except Exception as exc:  # noqa: BLE001
            skipped[key] = f"unreadable ({type(exc).__name__}: {exc})"
            continue
        if image_size is not None:
            image = resize_images(image, image_size)
        elif images and image.shape != images[0].shape:
            size, first = tuple(image.shape[2:]), tuple(images[0].shape[2:])
            skipped[key] = f"size {size} differs from {first} (give image_size to resize)"
            continue
        images.append(image)
        targets.append(label)
    if not images:
        # Reasons without file names: the skip record itself stays at the site.
        reasons = "; ".join(list(dict.fromkeys(skipped.values()))[:3])
        raise DataValidationError(
            root, f"no usable images ({len(skipped)} skipped{': ' + reasons if reasons else ''})"
        )
    return ImageSet(
        images=torch.cat(images),
        labels=torch.tensor(targets, dtype=torch.int64),
        num_classes=num_classes,
        source=str(root),
        skipped=skipped,
    )


def _label_files(
    root: Path,
    labels: Mapping[str, int | str] | None,
    class_names: list[str] | None,
    num_classes: int | None,
) -> tuple[list[tuple[Path, int]], dict[str, str], int]:
    """(file, class index) pairs, skips found while labelling, and the number of classes."""
    skipped: dict[str, str] = {}
    if class_names is not None:
        if len(set(class_names)) != len(class_names) or not class_names:
            raise ValueError(f"class_names: must be non-empty and unique, got {class_names}")
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"num_classes: {num_classes} != len(class_names) {len(class_names)}"
            )
        num_classes = len(class_names)
    if labels is not None:
        return _label_from_mapping(root, labels, class_names, num_classes, skipped)

    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for stray in _files_under(root, recursive=False):
        skipped[stray.name] = "not inside a class folder"
    if not folders:
        raise DataValidationError(
            root,
            f"no class sub-folders ({len(skipped)} loose files); expected root/<class>/<image>",
        )
    names = [f.name for f in folders]
    if class_names is not None:
        index = {name: class_names.index(name) for name in names if name in class_names}
    elif all(name.isdecimal() for name in names):
        index = {name: int(name) for name in names}
    else:
        index = {name: i for i, name in enumerate(names)}
    if not index:
        raise DataValidationError(root, f"no class folder {names} is in class_names {class_names}")
    if num_classes is None:
        num_classes = max(index.values()) + 1
    elif max(index.values()) >= num_classes:
        raise DataValidationError(
            root, f"{len(index)} class folders {names} do not fit num_classes={num_classes}"
        )
    files: list[tuple[Path, int]] = []
    for folder in folders:
        for path in _files_under(folder, recursive=True):
            if folder.name in index:
                files.append((path, index[folder.name]))
            else:
                key = path.relative_to(root).as_posix()
                skipped[key] = f"class folder {folder.name!r} is not in class_names"
    return files, skipped, num_classes


def _label_from_mapping(
    root: Path,
    labels: Mapping[str, int | str],
    class_names: list[str] | None,
    num_classes: int | None,
    skipped: dict[str, str],
) -> tuple[list[tuple[Path, int]], dict[str, str], int]:
    indices: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, str):
            if class_names is None or value not in class_names:
                raise ValueError(f"labels: class {value!r} of {name!r} is not in class_names")
            indices[name] = class_names.index(value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
            indices[name] = int(value)
        else:
            raise ValueError(f"labels: {name!r} has label {value!r}; expected an int >= 0")
    if not indices:
        raise ValueError("labels: mapping is empty")
    top = max(indices.values())
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        raise ValueError(f"labels: label {top} is out of range for num_classes={num_classes}")
    files: list[tuple[Path, int]] = []
    for path in _files_under(root, recursive=True):
        key = path.relative_to(root).as_posix()
        label = indices.get(key, indices.get(path.name))
        if label is None:
            skipped[key] = "no label given for this file"
        else:
            files.append((path, label))
    return files, skipped, num_classes


def _files_under(folder: Path, *, recursive: bool) -> list[Path]:
    """Non-hidden regular files, sorted so that loading order never depends on the filesystem."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
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


def _to_tensor(image: np.ndarray, channels: int, path: Path) -> torch.Tensor:
    """(H, W) or (H, W, 3) -> (1, channels, H, W)."""
    if image.ndim == 2:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    elif image.ndim == 3 and image.shape[-1] == 3:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        tensor = tensor.permute(2, 0, 1)[None]
    else:
        raise DataValidationError(
            path, f"shape {image.shape} is not one 2D image (multi-frame or 3D file)"
        )
    return to_channels(tensor, channels)
