"""Volumes load with their geometry and splits keep each patient (series) on one side."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from volume_fixtures import volume_site

from fedaegis.client.site import _partitions
from fedaegis.shared.data import load_site_data
from fedaegis.shared.data.partition import by_group, partition_indices
from fedaegis.shared.data.sources import stratified_split
from fedaegis.shared.data.volumes import dicom_series_geometry


@pytest.fixture(scope="module")
def site(shared_data: Path, tmp_path_factory) -> Path:
    return volume_site(shared_data, tmp_path_factory.mktemp("volumes"))


def test_series_and_nifti_load_as_volumes_with_geometry(site: Path, shared_data: Path):
    affine, modality = dicom_series_geometry(site / "ct" / "patient0" / "series1")
    assert str(modality) == "CT"
    # 0.977 mm pixels, 2 mm between slice positions (3 mm thick slices overlap): from the files' own tags
    assert np.allclose(np.sqrt((affine[:3, :3] ** 2).sum(0)), [2.0, 0.9765625, 0.9765625])
    assert affine[0, 2] < 0 and affine[1, 1] < 0 and affine[2, 0] > 0
    data = load_site_data(str(site), split="all", image_size=(28, 28, 28))
    assert data.images.shape == (8, 1, 28, 28, 28) and data.images.stored.dtype == torch.uint8
    assert data.labels.tolist() == [0] * 4 + [1] * 4 and data.skipped == {}
    assert data.groups[0] == "ct/patient0" and data.groups[-1] == "mr/patient3"
    x = data.images[:]
    assert float(x.min()) == 0.0 and 0.9 < float(x.max()) <= 1.0


def test_a_patient_never_lands_on_both_sides(site: Path):
    train = load_site_data(str(site), split="train", image_size=(28, 28, 28))
    test = load_site_data(str(site), split="test", image_size=(28, 28, 28))
    assert len(train) + len(test) == 8 and not set(train.groups) & set(test.groups)
    assert set(test.labels.tolist()) == {0, 1}  # still stratified


def test_slices_of_one_series_stay_together(tmp_path: Path, shared_data: Path):
    """2D loading of series folders: each slice is a sample, but a patient's slices share a side and a site."""
    for cls in ("a", "b"):
        for patient in range(4):
            series = tmp_path / cls / f"p{patient}" / "s"
            series.mkdir(parents=True)
            for name in ("test1.dcm", "test2.dcm", "test3.dcm"):
                shutil.copy(shared_data / "dicom" / "nih_cxr" / name, series / name)
    train = load_site_data(str(tmp_path), split="train", image_size=(16, 16))
    test = load_site_data(str(tmp_path), split="test", image_size=(16, 16))
    assert len(train) + len(test) == 24 and len(test) % 3 == 0
    assert not set(train.groups) & set(test.groups)
    parts = _partitions(str(tmp_path), "train", ((16, 16), 2, 0, None, None, None), 2, "iid", 0.5, 0)
    sites = [{train.groups[i] for i in p} for p in parts]
    assert all(len(p) % 3 == 0 for p in parts) and not sites[0] & sites[1]  # whole patients per site


def test_by_group_never_cuts_a_group():
    rng = np.random.default_rng(0)
    groups = [f"p{i}" for i in rng.integers(0, 30, 300)]
    labels = np.array([int(g[1:]) % 2 for g in groups])
    train, test = by_group(labels, groups, lambda lab: list(stratified_split(lab, 0.25, 0)))
    assert len(train) + len(test) == 300
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    parts = by_group(labels, groups, lambda lab: partition_indices(lab, 3, "dirichlet", alpha=1.0, seed=1))
    owners = [{groups[i] for i in p} for p in parts]
    assert sum(len(p) for p in parts) == 300 and all(not a & b for a in owners for b in owners if a is not b)
