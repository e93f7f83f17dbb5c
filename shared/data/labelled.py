"""The engine both folder loaders share: find files, label them, read, resize, record skips.

It lives apart from :mod:`.imagefolder` (PNG/JPEG/NIfTI readers) and :mod:`.dicom` (DICOM
readers) because both build on it; neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from .transforms import InputPipeline, resize_keep_aspect
from .types import DataValidationError, ImageSet, LazyImages, to_channels

Reader = Callable[[Path], np.ndarray]
STORED_SCALE = 65535.0  # a folder image's stored value that means 1.0


def _stored(image: torch.Tensor) -> torch.Tensor:
    """A [0, 1] float image as 16-bit steps (an 8-bit source's values exactly: v/255 = 257v/65535).

    DICOM windowing and resizing give values between 8-bit steps; 65535 steps keep them to
    within 8e-6, far below anything a model or an attack budget resolves.
    """
    return torch.round(image.clamp(0.0, 1.0) * STORED_SCALE).to(torch.int32).to(torch.uint16)


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

    Images are resized to ``image_size`` keeping their aspect ratio (the rest is zero padding),
    then held as 16-bit integers (:func:`_stored`): a site's folder costs half of what float32
    would, and batches become float32 inputs as they are used (:class:`~.types.LazyImages`).

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
    sides: list[int] = []
    groups: list[str] = []
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
        native = max(image.shape[2:])
        if image_size is not None:
            image = resize_keep_aspect(image, image_size)
        elif images and image.shape != images[0].shape:
            size, first = tuple(image.shape[2:]), tuple(images[0].shape[2:])
            skipped[key] = f"size {size} differs from {first} (give image_size to resize)"
            continue
        images.append(_stored(image))
        targets.append(label)
        sides.append(int(native))
        parts = path.relative_to(root).parts  # class/patient/.../file: the patient is the folder under the class
        groups.append("/".join(parts[:2]) if len(parts) > 2 else key)
    if not images:
        # Reasons without file names: the skip record itself stays at the site.
        reasons = "; ".join(list(dict.fromkeys(skipped.values()))[:3])
        raise DataValidationError(
            root, f"no usable images ({len(skipped)} skipped{': ' + reasons if reasons else ''})"
        )
    return ImageSet(
        images=LazyImages(torch.cat(images), InputPipeline(scale=STORED_SCALE)),
        labels=torch.tensor(targets, dtype=torch.int64),
        num_classes=num_classes,
        source=str(root),
        skipped=skipped,
        native_sides=tuple(sides),
        groups=tuple(groups) if len(set(groups)) < len(groups) else (),  # () : every file its own
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
