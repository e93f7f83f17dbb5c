"""NIfTI volumes and image/label pairs on the real MSD hippocampus and CT examples."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedaegis.shared.data import DataValidationError, load_nifti, load_nifti_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz", "hippocampus_004.nii.gz")


def need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def hippo(kind: str, name: str) -> Path:
    return need("msd_hippocampus", kind, name)


@pytest.fixture
def pair_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Three real image/label pairs copied into an MSD-style tree."""
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    images.mkdir()
    labels.mkdir()
    for name in CASES:
        shutil.copy(hippo("imagesTr", name), images / name)
        shutil.copy(hippo("labelsTr", name), labels / name)
    return images, labels


def save(array: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def test_hippocampus_image_and_label() -> None:
    image = load_nifti(hippo("imagesTr", "hippocampus_003.nii.gz"))
    label = load_nifti(hippo("labelsTr", "hippocampus_003.nii.gz"), dtype=None)
    assert image.dtype == np.float32 and image.shape == (34, 52, 35)
    assert label.shape == image.shape
    assert set(np.unique(label).tolist()) == {0, 1, 2}


def test_ct_volume_keeps_hounsfield_units() -> None:
    volume = load_nifti(need("dicom", "ct_series", "example_ct_sm.nii.gz"))
    assert volume.shape == (122, 101, 30)
    assert volume.min() == -1100 and volume.max() == 1207


def test_pairs_matched_by_name(pair_dirs: tuple[Path, Path]) -> None:
    pairs = load_nifti_pairs(*pair_dirs, num_classes=3)
    assert [p.name for p in pairs] == list(CASES)
    for pair in pairs:
        assert pair.image.shape == pair.label.shape
        assert pair.label.dtype == np.int64 and pair.label.max() == 2
    (pair_dirs[0] / "._hippocampus_001.nii.gz").write_bytes(b"macOS resource fork")
    assert len(load_nifti_pairs(*pair_dirs)) == 3  # hidden files ignored


def test_label_values_checked(pair_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(DataValidationError, match="hippocampus_001.nii.gz: label values \\[2\\]"):
        load_nifti_pairs(*pair_dirs, num_classes=2)
    with pytest.raises(DataValidationError, match="not in allowed labels \\[0, 2\\]"):
        load_nifti_pairs(*pair_dirs, allowed_labels={0, 2})


def test_image_without_label(pair_dirs: tuple[Path, Path]) -> None:
    images, labels = pair_dirs
    (labels / CASES[1]).unlink()
    with pytest.raises(DataValidationError, match=f"{CASES[1]}: no label file"):
        load_nifti_pairs(images, labels)


def test_label_without_image(pair_dirs: tuple[Path, Path]) -> None:
    images, labels = pair_dirs
    (images / CASES[2]).unlink()
    with pytest.raises(DataValidationError, match=f"{CASES[2]}: no image file"):
        load_nifti_pairs(images, labels)


def test_label_of_wrong_shape(pair_dirs: tuple[Path, Path]) -> None:
    images, labels = pair_dirs
    shutil.copy(hippo("labelsTr", CASES[0]), labels / CASES[1])  # (35,51,35) vs (34,52,35)
    with pytest.raises(DataValidationError, match="label shape"):
        load_nifti_pairs(images, labels)


def test_non_integer_label_map(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    save(np.zeros((4, 4, 4), np.float32), tmp_path / "img" / "a.nii.gz")
    save(np.full((4, 4, 4), 0.5, np.float32), tmp_path / "lab" / "a.nii.gz")
    with pytest.raises(DataValidationError, match="non-integer"):
        load_nifti_pairs(tmp_path / "img", tmp_path / "lab")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found"):
        load_nifti(tmp_path / "absent.nii.gz")
    raw = hippo("imagesTr", "hippocampus_003.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataValidationError, match="cut.nii.gz: not a readable NIfTI"):
        load_nifti(tmp_path / "cut.nii.gz")
    (tmp_path / "notes.nii").write_text("not a volume\n")
    with pytest.raises(DataValidationError, match="notes.nii: not a readable NIfTI"):
        load_nifti(tmp_path / "notes.nii")
    # A gzip stream that inflates to a truncated header.
    (tmp_path / "tiny.nii.gz").write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 20))
    with pytest.raises(DataValidationError, match="tiny.nii.gz"):
        load_nifti(tmp_path / "tiny.nii.gz")


def test_nan_rejected(tmp_path: Path) -> None:
    volume = load_nifti(hippo("imagesTr", "hippocampus_003.nii.gz"))
    volume[3, 4, 5] = np.nan
    with pytest.raises(DataValidationError, match="nan.nii.gz: volume contains NaN"):
        load_nifti(save(volume, tmp_path / "nan.nii.gz"))


def test_wrong_ndim(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="3 dimensions .* expected \\[2\\]"):
        load_nifti(hippo("imagesTr", "hippocampus_003.nii.gz"), ndim=2)
    slice_2d = load_nifti(hippo("imagesTr", "hippocampus_003.nii.gz"))[:, :, 17:18]
    out = load_nifti(save(slice_2d, tmp_path / "slice.nii.gz"), ndim=2)  # (H, W, 1) -> (H, W)
    assert out.shape == (34, 52)
