"""One entry point from a site's configured data source to its :class:`ImageSet`."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from .imagefolder import load_image_folder
from .medmnist import load_medmnist
from .partition import by_group
from .transforms import InputPipeline
from .types import DataValidationError, ImageSet, LazyImages, resize_images, to_channels
from .volumes import load_volume_folder

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_PREFIX = "embedded:"
FOLDER_SPLITS = ("train", "test", "all")
DEFAULT_FOLDER_SIZE = (28, 28)


def embedded_path(name: str) -> Path:
    """Path of a dataset shipped inside the package (``embedded:<name>``)."""
    path = EMBEDDED_DIR / f"{name}.npz"
    if not path.is_file():
        available = sorted(p.stem for p in EMBEDDED_DIR.glob("*.npz"))
        raise DataValidationError(
            f"{EMBEDDED_PREFIX}{name}", f"no embedded dataset {name!r}; available: {available}"
        )
    return path


def load_site_data(
    source: str | Path,
    *,
    split: str,
    image_size: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    channels: int | None = None,
    class_names: list[str] | None = None,
    spacing: tuple[float, ...] | None = None,
) -> ImageSet:
    """Load a site's ``split`` from ``"embedded:<name>"``, an ``.npz`` MedMNIST file or a folder.

    MedMNIST files keep their official train/val/test split. Folders (one sub-folder per
    class; PNG/JPEG/TIFF/DICOM/NIfTI) have none, so ``train``/``test`` are cut from all
    loaded images by a stratified split fixed by ``seed`` and ``test_fraction``; ``all``
    returns everything. ``image_size`` (default: native for ``.npz``, 28x28 for folders) and
    ``channels`` (default: native for ``.npz``, 1 for folders) make every site match the model.
    ``expected_modality``/``expected_body_part`` apply to DICOM files only. A 3D ``image_size``
    loads a folder's DICOM series and NIfTI files as volumes (:mod:`.volumes`), resampled to
    ``spacing`` mm (default: their median); folder splits keep each patient on one side.
    """
    text = str(source)
    if text.startswith(EMBEDDED_PREFIX):
        data = load_medmnist(embedded_path(text[len(EMBEDDED_PREFIX):]), split, num_classes)
        return _conform(data, image_size, channels)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".npz":
        return _conform(load_medmnist(path, split, num_classes), image_size, channels)
    if path.is_dir():
        if split not in FOLDER_SPLITS:
            raise DataValidationError(
                path,
                f"unknown split {split!r} for a folder source; expected one of {FOLDER_SPLITS}",
            )
        if image_size is not None and len(tuple(image_size)) == 3:
            data = load_volume_folder(path, size=int(tuple(image_size)[0]), spacing=spacing, class_names=class_names,
                                      num_classes=num_classes, expected_modality=expected_modality,
                                      expected_body_part=expected_body_part)
            return data if split == "all" else _split(data, split, test_fraction, seed)
        data = load_image_folder(
            path,
            image_size=tuple(image_size) if image_size is not None else DEFAULT_FOLDER_SIZE,
            channels=1 if channels is None else channels,
            class_names=class_names,
            num_classes=num_classes,
            expected_modality=expected_modality,
            expected_body_part=expected_body_part,
        )
        return data if split == "all" else _split(data, split, test_fraction, seed)
    if not path.exists():
        raise DataValidationError(path, "data source not found")
    raise DataValidationError(
        path, "unsupported data source; expected 'embedded:<name>', an .npz file or a folder"
    )


def _split(data: ImageSet, split: str, test_fraction: float, seed: int) -> ImageSet:
    """The ``train`` or ``test`` side of a folder: stratified, and by patient where samples name one."""
    labels = data.labels.numpy()
    if data.groups:
        train, test = by_group(labels, data.groups, lambda lab: list(stratified_split(lab, test_fraction, seed)))
    else:
        train, test = stratified_split(labels, test_fraction, seed)
    return data.subset(torch.from_numpy(train if split == "train" else test))


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices; each class keeps roughly ``test_fraction`` in test.

    Every class with at least two samples keeps one in train and puts round(n x fraction)
    (at least one) in test, so both sides see every class wherever that is possible.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = 0 if len(idx) < 2 else min(max(round(len(idx) * test_fraction), 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _conform(data: ImageSet, image_size: tuple[int, ...] | None, channels: int | None) -> ImageSet:
    if isinstance(data.images, LazyImages):  # stays stored: channels and size join its pipeline
        lazy = data.images
        shape = tuple(lazy.shape[1:])
        same_channels = channels is None or channels == shape[0]
        if image_size is not None and len(tuple(image_size)) != len(shape) - 1:
            raise ValueError(f"image_size: {tuple(image_size)} has {len(tuple(image_size))} dims, "
                             f"images have {len(shape) - 1}")
        same_size = image_size is None or tuple(image_size) == shape[1:]
        if same_channels and same_size:
            return data
        pipeline = InputPipeline(scale=lazy.pipeline.scale, channels=channels,
                                 size=None if image_size is None else tuple(int(s) for s in image_size))
        return ImageSet(LazyImages(lazy.stored, pipeline), data.labels, data.num_classes, data.source,
                        dict(data.skipped))
    images = data.images
    if channels is not None:
        images = to_channels(images, channels)
    if image_size is not None:
        images = resize_images(images, image_size)
    if images is data.images:
        return data
    return ImageSet(images, data.labels, data.num_classes, data.source, dict(data.skipped))
