"""End to end through the CLI on a folder site: PNGs plus real DICOMs, some unreadable;
small attack cells suppressed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.shared.data.sources import embedded_path

pytestmark = pytest.mark.slow

try:
    import mlflow  # noqa: F401 - optional extra: the run is also logged to MLflow when present

    MLFLOW = True
except ImportError:
    MLFLOW = False


def test_folder_dataset_skips_unreadable_files_and_reports_the_count(tmp_path, db_url, shared_data):
    root = tmp_path / "site"
    data = np.load(embedded_path("pneumoniamnist"))
    images, labels = data["train_images"], data["train_labels"].ravel()
    for cls in (0, 1):
        folder = root / str(cls)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == cls)[:60]:
            Image.fromarray(images[i]).save(folder / f"{i}.png")
    for name in ("test1.dcm", "test2.dcm"):  # real chest X-ray DICOMs, read and resized to 28x28
        shutil.copy(shared_data / "dicom" / "nih_cxr" / name, root / "1" / name)
    (root / "0" / "corrupt.dcm").write_bytes((shared_data / "dicom" / "nih_cxr" / "test3.dcm").read_bytes()[:600])
    (root / "1" / "notes.txt").write_text("not an image")

    res = CliRunner().invoke(app, [
        "simulate", "--dataset", str(root), "--sites", "2", "--rounds", "1", "--local-epochs", "1",
        "--db-url", db_url, "--json", "--num-cpus", "2",
        "--attacks", "fgsm", "--epsilons", "8/255", "--attack-samples", "5",
        *(["--mlflow", (tmp_path / "mlruns").as_uri()] if MLFLOW else []),
    ])
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout[res.stdout.index("{"):])
    (rnd,) = run["rounds"]
    assert rnd["sites"] == 2 and rnd["failures"] == 0
    assert rnd["metrics"]["evaluate.skipped"] == 2  # corrupt.dcm and notes.txt, counted once
    assert rnd["metrics"]["evaluate.num-examples"] == pytest.approx(0.2 * 122, abs=2)
    assert rnd["metrics"]["evaluate.suppressed-count"] == 0  # about 12 test images per site >= 10
    # 5 attacked images per site is below the minimum cell size (10): suppressed, marked, zero
    (cell,) = rnd["robustness"]
    assert cell["suppressed_count"] == 2 and cell["n_count"] == 0 and "robust_accuracy" not in cell
    if MLFLOW:  # the same run, read back with MLflow's own client
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        (tracked,) = client.search_runs([client.get_experiment_by_name("fedaegis").experiment_id])
        assert tracked.data.tags["fedaegis.uuid"] == run["uuid"] and tracked.info.status == "FINISHED"
        assert tracked.data.metrics["evaluate.skipped"] == 2 and tracked.data.params["num-server-rounds"] == "1"
