"""MedMNIST loader: real official-layout files, and every validation error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedaegis.shared.data import DataValidationError, load_medmnist

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="module")
def small() -> dict[str, np.ndarray]:
    """12 real PneumoniaMNIST val images/labels to build broken files from (synthetic if absent)."""
    path = DATA / "pneumoniamnist" / "pneumoniamnist.npz"
    if path.exists():
        with np.load(path) as f:
            return {"images": f["val_images"][:12], "labels": f["val_labels"][:12]}
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "labels": rng.integers(0, 2, (12, 1), dtype=np.uint8),
    }


def write_npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "site.npz"
    np.savez(path, **arrays)
    return path


def full_split(small: dict[str, np.ndarray], **override: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        f"{s}_{k}": v for s in ("train", "val", "test") for k, v in small.items()
    }
    arrays.update(override)
    return arrays


# --- real files ---------------------------------------------------------------------------------


def test_pneumoniamnist_grey_with_n1_labels() -> None:
    data = load_medmnist(need("pneumoniamnist", "pneumoniamnist.npz"), "test")
    assert data.images.shape == (624, 1, 28, 28)
    assert data.images.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert data.num_classes == 2
    assert torch.bincount(data.labels).tolist() == [234, 390]  # SOURCE.txt counts
    with np.load(need("pneumoniamnist", "pneumoniamnist.npz")) as f:
        raw = f["test_images"][5]
    assert torch.allclose(data.images[5, 0], torch.from_numpy(raw / 255.0).float())


def test_breastmnist_flat_labels() -> None:
    data = load_medmnist(need("breastmnist", "breastmnist.npz"), "train")
    assert data.images.shape == (546, 1, 28, 28)
    assert data.labels.shape == (546,)
    assert torch.bincount(data.labels).tolist() == [147, 399]
    assert data.source.endswith("breastmnist.npz:train")


def test_bloodmnist_rgb_channels_first() -> None:
    path = need("bloodmnist", "bloodmnist.npz")
    data = load_medmnist(path, "val")
    assert data.images.shape == (1712, 3, 28, 28)
    assert data.num_classes == 8
    with np.load(path) as f:
        raw = f["val_images"][3]  # (28, 28, 3)
    expected = torch.from_numpy(raw / 255.0).float().permute(2, 0, 1)
    assert torch.allclose(data.images[3], expected)


def test_adrenalmnist3d_volumes() -> None:
    data = load_medmnist(need("adrenalmnist3d", "adrenalmnist3d.npz"), "val")
    assert data.images.shape == (98, 1, 28, 28, 28)
    assert data.spatial_dims == 3
    assert torch.bincount(data.labels).tolist() == [76, 22]


# --- behaviour on built files -------------------------------------------------------------------


def test_num_classes_inferred_over_all_splits(tmp_path: Path, small: dict) -> None:
    arrays = full_split(small, train_labels=np.full((12, 1), 2, np.uint8))
    data = load_medmnist(write_npz(tmp_path, **arrays), "test")
    assert data.num_classes == 3  # test split alone holds only 0/1


def test_float_images_in_unit_range_are_kept(tmp_path: Path, small: dict) -> None:
    images = small["images"].astype(np.float32) / 255
    data = load_medmnist(write_npz(tmp_path, **full_split(small, val_images=images)), "val")
    assert torch.allclose(data.images[:, 0], torch.from_numpy(images))


# --- validation errors --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found") as err:
        load_medmnist(tmp_path / "nope.npz")
    assert "nope.npz" in str(err.value)


def test_corrupt_archive(tmp_path: Path) -> None:
    real = need("breastmnist", "breastmnist.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(real[: len(real) // 3])
    with pytest.raises(DataValidationError, match="cut.npz"):
        load_medmnist(path)
    text = tmp_path / "notes.npz"
    text.write_text("this is not an archive\n")
    with pytest.raises(DataValidationError, match="not a readable .npz"):
        load_medmnist(text)


def test_plain_npy_is_rejected(tmp_path: Path, small: dict) -> None:
    path = tmp_path / "array.npz"
    with path.open("wb") as handle:
        np.save(handle, small["images"])
    with pytest.raises(DataValidationError, match="single .npy"):
        load_medmnist(path)


def test_missing_key_is_named(tmp_path: Path, small: dict) -> None:
    arrays = full_split(small)
    del arrays["val_labels"]
    with pytest.raises(DataValidationError, match="missing key 'val_labels'"):
        load_medmnist(write_npz(tmp_path, **arrays), "val")


def test_unknown_split(tmp_path: Path, small: dict) -> None:
    with pytest.raises(DataValidationError, match="unknown split 'dev'"):
        load_medmnist(write_npz(tmp_path, **full_split(small)), "dev")


def test_count_mismatch(tmp_path: Path, small: dict) -> None:
    arrays = full_split(small, train_labels=small["labels"][:7])
    with pytest.raises(DataValidationError, match="12 images but train_labels has 7"):
        load_medmnist(write_npz(tmp_path, **arrays), "train")


@pytest.mark.parametrize(
    ("shape", "message"),
    [((12, 28), "expected \\(N,H,W\\)"), ((12, 28, 28, 4), "4 channels"),
     ((12, 2, 28, 28, 28, 1), "expected \\(N,H,W\\)")],
)
def test_bad_image_shape(tmp_path: Path, small: dict, shape: tuple, message: str) -> None:
    arrays = full_split(small, train_images=np.zeros(shape, np.uint8))
    with pytest.raises(DataValidationError, match=message):
        load_medmnist(write_npz(tmp_path, **arrays), "train")


def test_nan_float_images(tmp_path: Path, small: dict) -> None:
    images = small["images"].astype(np.float32) / 255
    images[3, 4, 5] = np.nan
    arrays = full_split(small, test_images=images)
    with pytest.raises(DataValidationError, match="test_images contains NaN"):
        load_medmnist(write_npz(tmp_path, **arrays), "test")


def test_float_images_outside_unit_range(tmp_path: Path, small: dict) -> None:
    arrays = full_split(small, test_images=small["images"].astype(np.float32))
    with pytest.raises(DataValidationError, match="outside \\[0, 1\\]"):
        load_medmnist(write_npz(tmp_path, **arrays), "test")


def test_negative_label(tmp_path: Path, small: dict) -> None:
    labels = small["labels"].astype(np.int64)
    labels[2] = -1
    with pytest.raises(DataValidationError, match="negative label -1 in split 'val'"):
        load_medmnist(write_npz(tmp_path, **full_split(small, val_labels=labels)), "val")


def test_non_integer_label(tmp_path: Path, small: dict) -> None:
    labels = small["labels"].astype(np.float32)
    labels[0] = 0.5
    with pytest.raises(DataValidationError, match="non-integer label 0.5 in split 'train'"):
        load_medmnist(write_npz(tmp_path, **full_split(small, train_labels=labels)), "train")


def test_label_out_of_range(tmp_path: Path, small: dict) -> None:
    labels = small["labels"].copy()
    labels[4] = 5
    path = write_npz(tmp_path, **full_split(small, test_labels=labels))
    message = "test_labels: label 5 is out of range for num_classes=2"
    with pytest.raises(DataValidationError, match=message):
        load_medmnist(path, "test", num_classes=2)


def test_multilabel_rejected(tmp_path: Path, small: dict) -> None:
    arrays = full_split(small, train_labels=np.zeros((12, 14), np.uint8))
    with pytest.raises(DataValidationError, match="multi-label"):
        load_medmnist(write_npz(tmp_path, **arrays), "train")


def test_empty_split(tmp_path: Path, small: dict) -> None:
    arrays = full_split(
        small, val_images=np.zeros((0, 28, 28), np.uint8), val_labels=np.zeros((0, 1), np.uint8)
    )
    with pytest.raises(DataValidationError, match="split 'val' is empty"):
        load_medmnist(write_npz(tmp_path, **arrays), "val")
