"""A small site of real 3D volumes: the real CT series cut into per-patient sub-series, and the
real MR volume cut into slabs (../shared/data/dicom/ct_series). Layout root/<class>/<patient>/..."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom


def volume_site(shared_data: Path, root: Path, per_class: int = 4) -> Path:
    ct = shared_data / "dicom" / "ct_series"
    files = sorted((ct / "example_ct_dicom").iterdir(),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    for i, chunk in enumerate(np.array_split(np.arange(len(files)), per_class)):
        series = root / "ct" / f"patient{i}" / "series1"
        series.mkdir(parents=True)
        for j in chunk:
            shutil.copy(files[j], series / files[j].name)
    mr = nib.load(ct / "example_mr_sm.nii.gz")
    data = np.asarray(mr.dataobj)
    for i, chunk in enumerate(np.array_split(np.arange(data.shape[2]), per_class)):
        affine = mr.affine.copy()
        affine[:3, 3] += mr.affine[:3, 2] * chunk[0]  # the slab keeps its place in the patient
        (root / "mr" / f"patient{i}").mkdir(parents=True)
        nib.save(nib.Nifti1Image(data[:, :, chunk[0]:chunk[-1] + 1], affine), root / "mr" / f"patient{i}" / "t1.nii.gz")
    return root
