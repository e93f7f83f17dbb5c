"""Hippocampus loading, preprocessing and the patient-level split into simulated hospitals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seg_fixtures import SIZE_3D_TINY, data_root, slices_2d, volumes_3d_tiny

from fedaegis.shared.data import DataValidationError
from fedaegis.shared.segmentation import SegmentationSet, split_patients, split_sites
from fedaegis.shared.segmentation.data import preprocess_volume


def test_2d_slices_are_normalised_labelled_and_indexed_by_volume():
    d = slices_2d()
    assert d.num_volumes == 20 and d.num_classes == 3 and d.spatial_dims == 2
    assert d.images.shape[1:] == (1, 32, 48) and d.images.dtype == torch.float32
    assert d.masks.shape == (len(d), 32, 48) and d.masks.dtype == torch.int64
    assert 0.0 <= float(d.images.min()) and float(d.images.max()) <= 1.0
    assert set(d.masks.unique().tolist()) == {0, 1, 2}
    assert bool(((d.masks > 0).flatten(1).sum(1) >= 1).all())  # only slices with foreground
    assert sorted(d.volume_index.unique().tolist()) == list(range(20))
    assert len(set(d.patient_ids)) == 20 and all(p.startswith("hippocampus_") for p in d.patient_ids)


def test_3d_volumes_resized_keep_every_structure():
    d = volumes_3d_tiny()
    assert d.images.shape == (8, 1, *SIZE_3D_TINY) and d.masks.shape == (8, *SIZE_3D_TINY)
    assert torch.equal(d.volume_index, torch.arange(8))
    for m in d.masks:
        assert set(m.unique().tolist()) == {0, 1, 2}


def test_preprocess_pad_crops_and_scales_per_volume():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 3000, (35, 51, 30)).astype(np.float32)
    label = np.zeros((35, 51, 30), np.int64)
    label[10:20, 20:30, 10:20] = 2
    img, lab = preprocess_volume(image, label, (32, 48, 32))
    assert img.shape == (1, 32, 48, 32) and lab.shape == (32, 48, 32)
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    assert int((lab == 2).sum()) == 1000  # centred structure survives the crop intact
    with pytest.raises(ValueError, match="resize_mode"):
        preprocess_volume(image, label, (32, 48, 32), "stretch")


def test_patient_split_is_disjoint_complete_and_reproducible():
    splits = split_patients(260, 5, test_fraction=0.2, seed=3)
    seen = [v for train, test in splits for v in (*train, *test)]
    assert sorted(seen) == list(range(260))  # every patient exactly once
    for train, test in splits:
        assert not set(train) & set(test) and len(test) >= 1 and len(train) >= 1
    assert splits == split_patients(260, 5, test_fraction=0.2, seed=3)
    assert splits != split_patients(260, 5, test_fraction=0.2, seed=4)
    with pytest.raises(ValueError, match="num_sites"):
        split_patients(3, 4)


def test_sites_share_no_patient_and_keep_all_slices_of_a_patient_together():
    d = slices_2d()
    sites = split_sites(d, 4, test_fraction=0.25, seed=0)
    parts = [p for s in sites for p in (s.train, s.test)]
    ids = [pid for p in parts for pid in p.patient_ids]
    assert len(ids) == len(set(ids)) == d.num_volumes
    assert sum(len(p) for p in parts) == len(d)
    for p in parts:  # each part holds exactly the original slices of its patients
        originals = [d.patient_ids.index(pid) for pid in p.patient_ids]
        expected = d.select_volumes(originals)
        assert torch.equal(p.images, expected.images) and torch.equal(p.masks, expected.masks)
        assert sorted(p.volume_index.unique().tolist()) == list(range(p.num_volumes))
    assert all(s.test.num_volumes >= 1 for s in sites)


def test_select_volumes_reindexes_in_the_given_order():
    vi = torch.tensor([0, 0, 1, 2, 2, 2])
    s = SegmentationSet(torch.arange(6.0).view(6, 1, 1, 1) / 10, torch.zeros(6, 1, 1, dtype=torch.long),
                        vi, ("a", "b", "c"))
    sub = s.select_volumes([2, 0])
    assert sub.patient_ids == ("c", "a")
    assert sub.volume_index.tolist() == [0, 0, 0, 1, 1]
    assert (sub.images.flatten() * 10).round().tolist() == [3, 4, 5, 0, 1]


def test_missing_folder_is_a_data_validation_error(tmp_path):
    from fedaegis.shared.segmentation import load_hippocampus

    data_root()
    with pytest.raises(DataValidationError, match="folder not found"):
        load_hippocampus(tmp_path)


def test_load_site_segmentation_gives_each_simulated_hospital_its_own_patients():
    from fedaegis.shared.segmentation import load_site_segmentation

    sites = [load_site_segmentation(data_root(), s, 2, max_volumes=6, seed=1) for s in range(2)]
    ids = [pid for s in sites for part in (s.train, s.test) for pid in part.patient_ids]
    assert len(ids) == len(set(ids)) == 6
    assert all(s.test.num_volumes == 1 and s.train.num_volumes == 2 for s in sites)
    with pytest.raises(ValueError, match="site"):
        load_site_segmentation(data_root(), 2, 2)
