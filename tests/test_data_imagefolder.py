"""Class-folder sites mixing PNG/JPEG/BMP/TIFF, DICOM and NIfTI files built from real images."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from fedaegis.shared.data import DataValidationError, load_image_folder
from fedaegis.shared.data.transforms import resize_keep_aspect

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="module")
def xrays() -> np.ndarray:
    """Six real PneumoniaMNIST test images (uint8, 28x28)."""
    with np.load(need("pneumoniamnist", "pneumoniamnist.npz")) as f:
        return f["test_images"][:6]


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    """Two real BloodMNIST test images (uint8, 28x28x3)."""
    with np.load(need("bloodmnist", "bloodmnist.npz")) as f:
        return f["test_images"][:2]


@pytest.fixture
def site(tmp_path: Path, xrays: np.ndarray, cells: np.ndarray) -> Path:
    root = tmp_path / "site"
    normal, pneumonia, empty = root / "normal", root / "pneumonia", root / "unseen"
    for folder in (normal, pneumonia, empty):
        folder.mkdir(parents=True)
    Image.fromarray(xrays[0]).save(normal / "a.png")
    Image.fromarray(xrays[1]).save(normal / "b.bmp")
    Image.fromarray(xrays[2].astype(np.uint16) * 257).save(normal / "c.tif")  # 16-bit grey
    Image.fromarray(cells[0]).save(normal / "d.jpg", quality=95)  # colour JPEG
    Image.fromarray(xrays[3]).save(pneumonia / "e.png")
    (pneumonia / "nested").mkdir()
    Image.fromarray(xrays[4]).save(pneumonia / "nested" / "f.png")
    shutil.copy(need("dicom", "nih_cxr", "test2.dcm"), pneumonia / "g.dcm")
    shutil.copy(need("dicom", "nih_cxr", "test4.dcm"), pneumonia / "h.dcm")
    hippo = nib.load(need("msd_hippocampus", "imagesTr", "hippocampus_001.nii.gz"))
    slice_2d = np.asarray(hippo.dataobj)[:, :, 17].astype(np.float32)
    nib.save(nib.Nifti1Image(slice_2d, np.eye(4)), pneumonia / "i.nii.gz")
    png = (normal / "a.png").read_bytes()
    (pneumonia / "broken.png").write_bytes(png[: len(png) // 2])
    (pneumonia / "README.txt").write_text("exported by PACS\n")
    (pneumonia / ".DS_Store").write_bytes(b"\x00")
    (root / "notes.md").write_text("site notes\n")
    return root


def test_mixed_site(site: Path, xrays: np.ndarray) -> None:
    data = load_image_folder(site, image_size=(28, 28), channels=1)
    assert data.images.shape == (9, 1, 28, 28)  # 4 normal + e, f, g, h, i
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert data.num_classes == 3  # normal, pneumonia, unseen (empty folder allowed)
    # Exact pixel round trip for lossless 28x28 files.
    expected = torch.from_numpy(xrays[0] / 255.0).float()
    torch.testing.assert_close(data.images[0, 0], expected)
    torch.testing.assert_close(data.images[2, 0], torch.from_numpy(xrays[2] / 255.0).float())
    assert set(data.skipped) == {"notes.md", "pneumonia/broken.png", "pneumonia/README.txt"}
    assert data.skipped["notes.md"] == "not inside a class folder"
    assert "not a readable image" in data.skipped["pneumonia/broken.png"]
    assert "not a supported image file (.txt)" == data.skipped["pneumonia/README.txt"]
    # Sorted: e.png, g.dcm, h.dcm, i.nii.gz, nested/f.png. NIfTI is min-max scaled, then resized.
    raw = torch.from_numpy(nib.load(site / "pneumonia" / "i.nii.gz").get_fdata()).float()
    scaled = (raw - raw.min()) / (raw.max() - raw.min())
    torch.testing.assert_close(data.images[7:8], resize_keep_aspect(scaled[None, None], (28, 28)))  # not squashed


def test_dicom_checks_apply_inside_folders(site: Path) -> None:
    data = load_image_folder(site, expected_modality={"DX"}, expected_body_part={"CHEST"})
    assert len(data) == 8
    assert "BodyPartExamined" in data.skipped["pneumonia/h.dcm"]


def test_class_names_fix_the_index(site: Path) -> None:
    data = load_image_folder(site, class_names=["pneumonia", "normal"])
    assert data.num_classes == 2
    assert data.labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_class_names_leave_unknown_folders_out(tmp_path: Path, xrays: np.ndarray) -> None:
    for name in ("normal", "other"):
        (tmp_path / name).mkdir()
        Image.fromarray(xrays[0]).save(tmp_path / name / "x.png")
    data = load_image_folder(tmp_path, class_names=["normal", "pneumonia"])
    assert data.labels.tolist() == [0] and data.num_classes == 2
    assert data.skipped == {"other/x.png": "class folder 'other' is not in class_names"}


def test_numeric_folder_names_are_the_class_index(tmp_path: Path, xrays: np.ndarray) -> None:
    for name in ("1", "3"):
        (tmp_path / name).mkdir()
        Image.fromarray(xrays[0]).save(tmp_path / name / "x.png")
    data = load_image_folder(tmp_path, num_classes=4)
    assert data.labels.tolist() == [1, 3] and data.num_classes == 4
    with pytest.raises(DataValidationError, match="num_classes=2"):
        load_image_folder(tmp_path, num_classes=2)


def test_channels_and_resize(site: Path, cells: np.ndarray) -> None:
    rgb = load_image_folder(site, image_size=(56, 40), channels=3)
    assert rgb.images.shape == (9, 3, 56, 40)
    assert torch.equal(rgb.images[0, 0], rgb.images[0, 1])  # grey replicated
    jpeg = load_image_folder(site, image_size=(28, 28), channels=3).images[3]
    assert (jpeg - torch.from_numpy(cells[0] / 255.0).float().permute(2, 0, 1)).abs().mean() < 0.03
    assert 0.0 <= float(rgb.images.min()) and float(rgb.images.max()) <= 1.0


def test_native_size_skips_odd_sizes(tmp_path: Path, xrays: np.ndarray) -> None:
    (tmp_path / "c").mkdir()
    Image.fromarray(xrays[0]).save(tmp_path / "c" / "a.png")
    Image.fromarray(xrays[1]).resize((14, 14)).save(tmp_path / "c" / "b.png")
    data = load_image_folder(tmp_path, image_size=None)
    assert data.images.shape == (1, 1, 28, 28)
    assert "differs" in data.skipped["c/b.png"]


def test_root_without_usable_images(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="folder not found"):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(DataValidationError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "normal").mkdir()
    (tmp_path / "normal" / "README.txt").write_text("nothing here\n")
    with pytest.raises(DataValidationError, match="no usable images \\(1 skipped"):
        load_image_folder(tmp_path)


def test_bad_channels_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path, channels=2)
