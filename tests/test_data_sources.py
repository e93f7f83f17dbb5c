"""load_site_data: embedded dataset, MedMNIST files and class folders behind one entry point."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedaegis.shared.data import DataValidationError, ImageSet, load_site_data
from fedaegis.shared.data.sources import EMBEDDED_DIR, stratified_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture
def png_site(tmp_path: Path) -> Path:
    """A class-folder site of 30 real PneumoniaMNIST images (10 normal, 20 pneumonia)."""
    with np.load(need("pneumoniamnist", "pneumoniamnist.npz")) as f:
        images, labels = f["val_images"][:60], f["val_labels"][:60, 0]
    root = tmp_path / "site"
    for name, cls, count in (("normal", 0, 10), ("pneumonia", 1, 20)):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images[labels == cls][:count]):
            Image.fromarray(image).save(root / name / f"{i:03d}.png")
    return root


def test_embedded_pneumoniamnist_ships_with_the_package() -> None:
    data = load_site_data("embedded:pneumoniamnist", split="test")
    assert isinstance(data, ImageSet)
    assert data.images.shape == (624, 1, 28, 28) and data.num_classes == 2
    assert torch.bincount(data.labels).tolist() == [234, 390]


def test_embedded_notice_states_licence_and_citations() -> None:
    notice = (EMBEDDED_DIR / "NOTICE.txt").read_text()
    for needed in ("CC BY 4.0", "MedMNIST v2", "Scientific Data", "Kermany", "2018"):
        assert needed in notice


def test_unknown_embedded_name() -> None:
    with pytest.raises(DataValidationError, match="no embedded dataset 'chestmnist'"):
        load_site_data("embedded:chestmnist", split="train")


def test_npz_path_with_resize_and_channels() -> None:
    path = need("breastmnist", "breastmnist.npz")
    data = load_site_data(str(path), split="val", image_size=(32, 32), channels=3)
    assert data.images.shape == (78, 3, 32, 32)
    assert torch.equal(data.images[:, 0], data.images[:, 2])
    native = load_site_data(path, split="val")
    assert native.images.shape == (78, 1, 28, 28)


def test_missing_npz_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="absent.npz: file not found"):
        load_site_data(tmp_path / "absent.npz", split="train")


def test_folder_split_is_stratified_deterministic_and_disjoint(png_site: Path) -> None:
    train = load_site_data(png_site, split="train", seed=5, test_fraction=0.2)
    test = load_site_data(png_site, split="test", seed=5, test_fraction=0.2)
    assert (len(train), len(test)) == (24, 6)
    assert torch.bincount(test.labels).tolist() == [2, 4]  # 20 % of each class
    assert train.images.shape[1:] == (1, 28, 28) and train.num_classes == 2
    everything = load_site_data(png_site, split="all")
    assert len(everything) == 30
    seen = torch.cat([train.images, test.images]).flatten(1)
    assert torch.unique(seen, dim=0).shape[0] == 30  # disjoint, and together all images
    again = load_site_data(png_site, split="test", seed=5, test_fraction=0.2)
    assert torch.equal(again.images, test.images)
    other = load_site_data(png_site, split="test", seed=6, test_fraction=0.2)
    assert not torch.equal(other.images, test.images)


def test_folder_with_dicom_site_checks(tmp_path: Path) -> None:
    for cls, numbers in (("normal", (1, 4)), ("findings", (2, 3, 5))):
        (tmp_path / cls).mkdir()
        for n in numbers:
            shutil.copy(need("dicom", "nih_cxr", f"test{n}.dcm"), tmp_path / cls / f"test{n}.dcm")
    data = load_site_data(
        tmp_path, split="all", image_size=(24, 24),
        expected_modality={"DX", "CR"}, expected_body_part={"CHEST"},
    )
    assert data.images.shape == (3, 1, 24, 24)
    assert sorted(data.skipped) == ["findings/test5.dcm", "normal/test4.dcm"]
    train = load_site_data(tmp_path, split="train", expected_body_part={"CHEST"})
    assert train.num_skipped == 1  # the skip record travels with each split


def test_folder_rejects_val_split(png_site: Path) -> None:
    with pytest.raises(DataValidationError, match="unknown split 'val' for a folder"):
        load_site_data(png_site, split="val")


def test_unsupported_or_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="data source not found"):
        load_site_data(tmp_path / "nowhere", split="train")
    (tmp_path / "list.csv").write_text("a,b\n")
    with pytest.raises(DataValidationError, match="unsupported data source"):
        load_site_data(tmp_path / "list.csv", split="train")


def test_stratified_split_edges() -> None:
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    train, test = stratified_split(labels, 0.4, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(8))
    assert sorted(labels[test].tolist()) == [0, 0, 1]  # class 2 (one sample) stays in train
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            stratified_split(labels, bad, seed=0)
