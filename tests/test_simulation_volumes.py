"""3D federations end to end: real AdrenalMNIST3D and the real CT series, and declared sites."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from volume_fixtures import volume_site

from fedaegis.orchestration.cli import app, site_log_path

runner = CliRunner()


def _run(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{"):])


@pytest.mark.slow
def test_adrenalmnist3d_federation(tmp_path, db_url, shared_data):
    """The real 3D MedMNIST file (its first 90 train / 20 val / 40 test volumes) trains and evaluates at every site."""
    real = np.load(shared_data / "adrenalmnist3d" / "adrenalmnist3d.npz")
    keep = {"train": 90, "val": 20, "test": 40}
    np.savez(tmp_path / "adrenal.npz", **{f"{s}_{k}": real[f"{s}_{k}"][:n] for s, n in keep.items()
                                          for k in ("images", "labels")})
    res = runner.invoke(app, ["simulate", "--dataset", str(tmp_path / "adrenal.npz"), "--sites", "2", "--rounds", "1",
                              "--local-epochs", "1", "--attacks", "", "--db-url", db_url, "--json", "--num-cpus", "2"])
    run = _run(res)
    assert "image size 28 px (chosen from the data" in " ".join(res.output.split())
    assert run["config"]["spatial-dims"] == 3 and run["config"]["image-size"] == 28
    (rnd,) = run["rounds"]
    assert rnd["sites"] == 2 and rnd["failures"] == 0 and rnd["metrics"]["evaluate.num-examples"] == 40


@pytest.mark.slow
def test_ct_series_federation_with_declared_modality(tmp_path, db_url, shared_data):
    """Series and NIfTI volumes, resampled alike; a DX series in the CT folder is skipped, named in the site log."""
    root = volume_site(shared_data, tmp_path / "site")
    stray = root / "ct" / "patient9" / "series1"
    stray.mkdir(parents=True)
    shutil.copy(shared_data / "dicom" / "nih_cxr" / "test1.dcm", stray / "test1.dcm")  # a real chest X-ray (DX)
    res = runner.invoke(app, ["simulate", "--dataset", str(root), "--sites", "2", "--rounds", "1",
                              "--local-epochs", "1", "--attacks", "", "--modality", "CT", "-c", "spatial-dims=3",
                              "--db-url", db_url, "--json", "--num-cpus", "2"])
    run = _run(res)
    text = " ".join(res.output.split())
    assert "image size 64 px (chosen from the data" in text  # median longer side 314 (512 CT, 117 MR) -> 64
    assert "sites: skipped 1 file (1 wrong modality)" in text and "patient9" not in text  # no names on the console
    assert "ct/patient9/series1: skipped" not in text
    log = site_log_path().read_text()
    assert "ct/patient9/series1" in log and "Modality (0008,0060) is 'DX'" in log
    assert run["config"]["spatial-dims"] == 3 and run["config"]["modality"] == "CT"
    (rnd,) = run["rounds"]
    assert rnd["sites"] == 2 and rnd["failures"] == 0


def test_3d_on_2d_data_is_refused_before_the_run(tmp_path, db_url, shared_data):
    res = runner.invoke(app, ["simulate", "--dataset", str(shared_data / "breastmnist" / "breastmnist.npz"),
                              "-c", "spatial-dims=3", "--db-url", db_url])
    assert res.exit_code == 2
    assert "-c spatial-dims = 3 but --dataset" in " ".join(res.output.split()) and "2D images" in res.output
