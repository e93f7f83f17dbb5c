"""3D volumes: DICOM series and NIfTI files, resampled alike with MONAI, one sample per series.

A CT or MR study is a volume with a physical voxel spacing and an orientation in the patient;
training on its slices as independent images puts one patient on both sides of a split.
Here every series (a folder of single-frame DICOM files) and every 3D NIfTI file is one
sample: read with its geometry (the DICOM affine from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing; the NIfTI affine), turned to RAS with MONAI's
``Orientation``, resampled to one voxel spacing with ``Spacing``, scaled to [0, 1] per
volume, resized keeping its proportions and padded to a cube (``Resize`` + ``SpatialPad``),
and kept as bytes. Samples carry their patient (the folder under the class folder) so that
train/test and site splits keep a patient's series together.

Layout: ``root/<class>/<patient>/<series>/*.dcm``, ``root/<class>/<series>/*.dcm`` or
``root/<class>/**/<volume>.nii[.gz]``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch

from .dicom import check_dicom_header, load_dicom_series
from .labelled import _files_under, _label_files
from .nifti import is_nifti, load_nifti
from .transforms import InputPipeline, fitted_shape
from .types import DataValidationError, ImageSet, LazyImages

#: LPS (DICOM patient coordinates) -> RAS (NIfTI, MONAI)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def find_volumes(root: Path, class_folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Series folders (a folder whose files are DICOM) and 3D NIfTI files under one class folder."""
    found: list[Path] = []
    skipped: dict[str, str] = {}
    files = _files_under(class_folder, recursive=True)
    dicom_dirs = sorted({f.parent for f in files if not is_nifti(f)})
    for f in files:
        if is_nifti(f):
            found.append(f)
    for folder in dicom_dirs:
        found.append(folder)
    return sorted(found), skipped


def dicom_series_geometry(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The RAS affine of a series as :func:`load_dicom_series` orders it (slice, row, column)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    try:
        orientation = np.asarray(heads[0].ImageOrientationPatient, dtype=np.float64)
        row_dir, col_dir = orientation[:3], orientation[3:]
        row_spacing, col_spacing = (float(v) for v in heads[0].PixelSpacing)
        normal = np.cross(row_dir, col_dir)
        positions = np.asarray([h.ImagePositionPatient for h in heads], dtype=np.float64)
    except (AttributeError, ValueError, TypeError, IndexError) as exc:
        raise DataValidationError(folder, f"series without geometry (ImagePositionPatient, "
                                  f"ImageOrientationPatient, PixelSpacing): {exc}") from None
    positions = positions[np.argsort(positions @ normal, kind="stable")]
    step = positions[1] - positions[0] if len(positions) > 1 else normal * float(
        heads[0].get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = step  # array axis 0: slices
    affine[:3, 1] = col_dir * row_spacing  # axis 1: rows advance along the column direction
    affine[:3, 2] = row_dir * col_spacing  # axis 2: columns advance along the row direction
    affine[:3, 3] = positions[0]
    return _LPS_TO_RAS @ affine, np.asarray(heads[0].get("Modality", ""))


def _read(path: Path, expected_modality: Collection[str] | None,
          expected_body_part: Collection[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(volume, RAS affine) of a series folder or a NIfTI file, values as stored (HU for CT)."""
    if path.is_dir():
        volume = load_dicom_series(path, window=None, expected_modality=expected_modality,
                                   expected_body_part=expected_body_part)
        affine, _ = dicom_series_geometry(path)
        return volume, affine
    import nibabel as nib

    volume = load_nifti(path, ndim=3)
    return volume, np.asarray(nib.load(path).affine, dtype=np.float64)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def _to_ras_spacing(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel spacing per RAS axis (after MONAI's Orientation('RAS'))."""
    axis_of = np.abs(affine[:3, :3]).argmax(axis=0)  # the RAS axis each array axis mostly runs along
    out = np.zeros(3)
    for array_axis, ras_axis in enumerate(axis_of):
        out[ras_axis] = _spacing(affine)[array_axis]
    return out


def prepare_volume(volume: np.ndarray, affine: np.ndarray, spacing: Sequence[float], size: int) -> torch.Tensor:
    """One volume -> uint8 (1, size, size, size): RAS, ``spacing`` mm, [0, 1] per volume, fitted and padded."""
    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientation, Resize, ScaleIntensity, Spacing, SpatialPad

    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None],
                       affine=torch.from_numpy(affine))
    image = Compose([Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))), Spacing(pixdim=tuple(spacing), mode="bilinear"),
                     ScaleIntensity(minv=0.0, maxv=1.0)])(image)
    image = Resize(spatial_size=fitted_shape(image.shape[1:], (size,) * 3), mode="trilinear")(image)
    image = SpatialPad((size,) * 3, method="symmetric")(image)
    x = image.as_tensor().clamp(0.0, 1.0)
    return (x * 255).round_().to(torch.uint8)


def load_volume_folder(
    root: str | Path,
    *,
    size: int = 28,
    spacing: Sequence[float] | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
) -> ImageSet:
    """A site folder of 3D volumes (see the module docstring) -> :class:`ImageSet` of (N, 1, size^3).

    ``spacing`` (mm per RAS axis) defaults to the median spacing of the site's volumes. A
    series or file that cannot be used is skipped with its reason, as 2D files are.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataValidationError(root, "folder not found")
    labelled, skipped, num_classes = _label_files(root, None, class_names, num_classes)
    classes = {root / path.relative_to(root).parts[0]: label for path, label in labelled}
    volumes: list[tuple[Path, int]] = []
    for folder, label in sorted(classes.items()):
        found, more = find_volumes(root, folder)
        skipped.update(more)
        volumes += [(v, label) for v in found]
    raw: list[tuple[str, str, np.ndarray, np.ndarray, int]] = []
    for path, label in volumes:
        key = path.relative_to(root).as_posix()
        try:
            volume, affine = _read(path, expected_modality, expected_body_part)
        except DataValidationError as exc:
            skipped[key] = exc.problem if Path(exc.source) == path else f"{Path(exc.source).name}: {exc.problem}"
            continue
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd series must not take the site down
            skipped[key] = f"unreadable ({type(exc).__name__}: {exc})"
            continue
        parts = path.relative_to(root).parts
        patient = "/".join(parts[:2]) if len(parts) > 2 else key  # class/patient/series: the patient folder
        raw.append((key, patient, volume, affine, label))
    if not raw:
        reasons = "; ".join(list(dict.fromkeys(skipped.values()))[:3])
        raise DataValidationError(root, f"no usable volumes (DICOM series folders or 3D NIfTI files; "
                                  f"{len(skipped)} skipped{': ' + reasons if reasons else ''})")
    if spacing is None:
        spacing = tuple(float(v) for v in np.median([_to_ras_spacing(v, a) for _, _, v, a, _ in raw], axis=0))
    stored = torch.stack([prepare_volume(v, a, spacing, size) for _, _, v, a, _ in raw])
    return ImageSet(
        images=LazyImages(stored, InputPipeline(scale=255.0)),
        labels=torch.tensor([r[4] for r in raw], dtype=torch.int64),
        num_classes=num_classes,
        source=str(root),
        skipped=skipped,
        native_sides=tuple(int(max(v.shape)) for _, _, v, _, _ in raw),
        groups=tuple(r[1] for r in raw),
    )
