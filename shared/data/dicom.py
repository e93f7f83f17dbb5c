"""DICOM images, series and site folders, read with pydicom and checked before use.

A hospital's export often carries wrong or odd headers (a rib-cage study filed as chest, a
CT in an X-ray folder). Such files are rejected with a :class:`DataValidationError` naming
the file and the tag, so a site never trains on data it did not mean to share.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from .labelled import load_labelled_files
from .types import DataValidationError

if TYPE_CHECKING:
    from .types import ImageSet

Window = tuple[float, float] | Literal["auto"] | None

#: Defined terms of (0018,5100) Patient Position (PS3.3 C.7.3.1.1.2).
PATIENT_POSITIONS = frozenset(
    "HFP HFS HFDR HFDL FFDR FFDL FFP FFS LFP LFS RFP RFS AFDR AFDL PFDR PFDL".split()
)
#: Defined terms of (0018,5101) View Position. Projection radiographs are routinely
#: written with the view (PA, AP, ...) in Patient Position; that is accepted, junk is not.
VIEW_POSITIONS = frozenset("AP PA LL RL RLD LLD RLO LLO".split())
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_dicom_image(
    path: str | Path,
    *,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
    window: Window = "auto",
) -> np.ndarray:
    """Read one DICOM file as float32 in [0, 1]: (H, W), (frames, H, W), or (..., 3) if colour.

    Order of operations follows the DICOM grayscale pipeline: modality LUT (rescale to e.g.
    Hounsfield units), VOI (``window``), then MONOCHROME1 inversion so that bright always
    means dense. ``window`` is ``(center, width)``; ``"auto"`` uses the file's own VOI LUT or
    first WindowCenter/WindowWidth and falls back to ``None``; ``None`` maps the full range
    the stored bits allow onto [0, 1], so intensities stay comparable between files.
    Colour (RGB/YBR) files are only scaled by their bit depth; ``window`` does not apply.
    """
    path = Path(path)
    window = check_window(window)
    ds = _read_dataset(path)
    check_dicom_header(
        ds, path, expected_modality=expected_modality, expected_body_part=expected_body_part
    )
    stored = _pixels(ds, path)
    if int(ds.get("SamplesPerPixel", 1)) == 3:  # colour: pydicom already gives RGB
        bits = int(ds.get("BitsStored", 8))
        return (stored.astype(np.float32) / np.float32(2**bits - 1)).clip(0.0, 1.0)
    values = _modality_values(stored, ds, path)
    out = _to_unit_range(values, ds, path, window)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32, copy=False)


def check_dicom_header(
    ds: pydicom.Dataset,
    path: str | Path,
    *,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
) -> None:
    """Raise :class:`DataValidationError` if Modality, BodyPartExamined or PatientPosition is off.

    ``expected_*`` of None skips that check; a present PatientPosition must be a defined term.
    """
    _check_tag(ds, path, "Modality", "(0008,0060)", expected_modality)
    _check_tag(ds, path, "BodyPartExamined", "(0018,0015)", expected_body_part)
    position = str(ds.get("PatientPosition", "") or "").strip().upper()
    if position and position not in PATIENT_POSITIONS | VIEW_POSITIONS:
        raise DataValidationError(
            path,
            f"PatientPosition (0018,5100) is {position!r}, not a DICOM defined term "
            f"({' '.join(sorted(PATIENT_POSITIONS))}; "
            f"or a view {' '.join(sorted(VIEW_POSITIONS))})",
        )


def check_window(window: Window) -> Window:
    """Validate a ``window`` argument early, before any file is read."""
    if window is None or window == "auto":
        return window
    if isinstance(window, str) or len(window) != 2:
        raise ValueError(f"window: expected (center, width), 'auto' or None, got {window!r}")
    center, width = float(window[0]), float(window[1])
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise ValueError(f"window: need a finite center and a width > 0, got {window!r}")
    return center, width


def apply_window(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) of modality values onto [0, 1]."""
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise ValueError(f"window: need a finite center and a width > 0, got ({center}, {width})")
    x = values.astype(np.float32, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        out = (x - center) / width + 0.5
    elif function == "LINEAR":
        out = (x - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5
    else:
        raise ValueError(f"window: unknown VOI LUT function {function!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def load_dicom_series(
    folder: str | Path,
    *,
    window: Window = None,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
) -> np.ndarray:
    """Stack one single-frame DICOM series into a float32 (D, H, W) volume.

    Slices are ordered by ImagePositionPatient projected on the slice normal (the cross
    product of ImageOrientationPatient's row and column vectors), which is right for any
    orientation, unlike file names or SliceLocation; InstanceNumber is the fallback. With
    ``window=None`` the values are the modality-LUT output (Hounsfield units for CT);
    otherwise each slice is windowed onto [0, 1] as in :func:`read_dicom_image`.
    """
    folder = Path(folder)
    window = check_window(window)
    if not folder.is_dir():
        raise DataValidationError(folder, "series folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataValidationError(folder, "no files in series folder")
    slices = []
    for file in files:
        ds = _read_dataset(file)
        check_dicom_header(
            ds, file, expected_modality=expected_modality, expected_body_part=expected_body_part
        )
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataValidationError(file, "multi-frame file inside a single-frame series")
        slices.append((file, ds))
    _check_same(slices, "SeriesInstanceUID", "(0020,000E)")
    first_file, first = slices[0]
    shape = (first.get("Rows"), first.get("Columns"))
    for file, ds in slices[1:]:
        if (ds.get("Rows"), ds.get("Columns")) != shape:
            raise DataValidationError(
                file,
                f"slice shape (Rows, Columns) {(ds.get('Rows'), ds.get('Columns'))} differs "
                f"from {shape} in {first_file.name}",
            )
    ordered = [slices[i] for i in _slice_order(slices, folder)]
    volume = []
    for file, ds in ordered:
        values = _modality_values(_pixels(ds, file), ds, file)
        if window is not None:
            values = _to_unit_range(values, ds, file, window)
            if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
                values = 1.0 - values
        volume.append(values.astype(np.float32, copy=False))
    return np.stack(volume)


def load_dicom_folder(
    folder: str | Path,
    *,
    labels: Mapping[str, int | str] | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    image_size: tuple[int, int] | None = (28, 28),
    channels: int = 1,
    expected_modality: Collection[str] | None = None,
    expected_body_part: Collection[str] | None = None,
    window: Window = "auto",
) -> ImageSet:
    """A site folder of 2D DICOM images -> :class:`ImageSet`; bad files are skipped, not fatal.

    Labels come from ``labels`` (file path relative to ``folder``, or bare file name ->
    class index or class name from ``class_names``) or, when ``labels`` is None, from one
    sub-folder per class (see :func:`load_image_folder`). Every file is tried as DICOM,
    whatever its name; each one that fails a check is listed in ``ImageSet.skipped`` with the
    reason. Raises :class:`DataValidationError` only when no usable image is left.
    """
    window = check_window(window)

    def reader(path: Path) -> np.ndarray:
        return read_dicom_image(
            path,
            expected_modality=expected_modality,
            expected_body_part=expected_body_part,
            window=window,
        )

    return load_labelled_files(
        folder,
        reader_for=lambda _path: reader,
        labels=labels,
        class_names=class_names,
        num_classes=num_classes,
        image_size=image_size,
        channels=channels,
    )


# --- internals ---------------------------------------------------------------------------------


def _read_dataset(path: Path) -> pydicom.Dataset:
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    try:
        return pydicom.dcmread(path)
    # pydicom raises many exception types on malformed input; any of them means "unreadable".
    except Exception as exc:  # noqa: BLE001
        raise DataValidationError(
            path, f"not a readable DICOM file ({type(exc).__name__}: {exc})"
        ) from exc


def _expected(values: Collection[str] | None) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, str):  # "DX" must not become {"D", "X"}
        values = [values]
    return {v.strip().upper() for v in values}


def _check_tag(
    ds: pydicom.Dataset, path: str | Path, keyword: str, tag: str, allowed: Collection[str] | None
) -> None:
    wanted = _expected(allowed)
    if wanted is None:
        return
    value = str(ds.get(keyword, "") or "").strip().upper()
    if not value:
        raise DataValidationError(
            path, f"{keyword} {tag} is missing; expected one of {sorted(wanted)}"
        )
    if value not in wanted:
        raise DataValidationError(
            path, f"{keyword} {tag} is {value!r}; expected one of {sorted(wanted)}"
        )


def _pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise DataValidationError(path, "missing pixel data (7FE0,0010)")
    try:
        return ds.pixel_array
    # Decoders raise ValueError, RuntimeError, NotImplementedError, ... for bad pixel data.
    except Exception as exc:  # noqa: BLE001
        raise DataValidationError(
            path, f"pixel data (7FE0,0010) cannot be decoded ({type(exc).__name__}: {exc})"
        ) from exc


def _modality_values(stored: np.ndarray, ds: pydicom.Dataset, path: Path) -> np.ndarray:
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    if not np.isfinite(values).all():
        raise DataValidationError(path, "pixel data contains NaN or infinite values")
    return values


def _first(value: object) -> float:
    """WindowCenter/WindowWidth may hold several values; the first is the primary one."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def _to_unit_range(
    values: np.ndarray, ds: pydicom.Dataset, path: Path, window: Window
) -> np.ndarray:
    if window == "auto":
        if "VOILUTSequence" in ds:
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            indices = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
            out = apply_voi_lut(indices, ds, index=0, prefer_lut=True).astype(np.float32)
            return np.clip(out / np.float32(2**bits - 1), 0.0, 1.0)
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            function = str(ds.get("VOILUTFunction") or "LINEAR")
            try:
                center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
                return apply_window(values, center, width, function)
            except ValueError as exc:
                raise DataValidationError(
                    path, f"WindowCenter/WindowWidth (0028,1050)/(0028,1051): {exc}"
                ) from exc
        window = None
    if window is None:
        lo, hi = _value_range(ds)
        if hi <= lo:
            return np.zeros_like(values, dtype=np.float32)
        return np.clip((values - lo) / np.float32(hi - lo), 0.0, 1.0)
    center, width = check_window(window)  # type: ignore[misc]
    return apply_window(values, center, width)


def _value_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The modality-value range the stored bits allow (e.g. -1024..3071 HU for 12-bit CT)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    else:
        stored = np.array([0, 2**bits - 1], dtype=np.int64)
    ends = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _check_same(slices: list[tuple[Path, pydicom.Dataset]], keyword: str, tag: str) -> None:
    first = str(slices[0][1].get(keyword, ""))
    for file, ds in slices[1:]:
        value = str(ds.get(keyword, ""))
        if value != first:
            raise DataValidationError(
                file, f"{keyword} {tag} {value!r} differs from {first!r} in {slices[0][0].name}: "
                "the folder mixes series"
            )


def _slice_order(slices: list[tuple[Path, pydicom.Dataset]], folder: Path) -> list[int]:
    geometry = [
        (ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")) for _, ds in slices
    ]
    if all(pos is not None and len(pos) == 3 and ori is not None and len(ori) == 6
           for pos, ori in geometry):
        orientation = np.asarray(geometry[0][1], dtype=np.float64)
        for (file, _), (_, ori) in zip(slices, geometry, strict=True):
            if not np.allclose(np.asarray(ori, dtype=np.float64), orientation, atol=1e-4):
                raise DataValidationError(
                    file, "ImageOrientationPatient (0020,0037) differs between slices"
                )
        normal = np.cross(orientation[:3], orientation[3:])
        keys = [float(np.dot(np.asarray(pos, dtype=np.float64), normal)) for pos, _ in geometry]
        what = "ImagePositionPatient (0020,0032)"
    elif all("InstanceNumber" in ds and ds.InstanceNumber is not None for _, ds in slices):
        keys = [float(ds.InstanceNumber) for _, ds in slices]
        what = "InstanceNumber (0020,0013)"
    else:
        raise DataValidationError(
            folder, "cannot order slices: neither ImagePositionPatient/ImageOrientationPatient "
            "nor InstanceNumber on every slice"
        )
    if len(set(np.round(keys, 4))) != len(keys):
        raise DataValidationError(folder, f"two slices share the same {what}")
    return [int(i) for i in np.argsort(keys, kind="stable")]
