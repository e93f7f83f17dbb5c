"""fedaegis as a Flower App for ``flwr run``: a minimal bundle, an app folder for installed copies,
and the dataset's shape filled in by the ServerApp."""

from __future__ import annotations

import subprocess
import tomllib
import zipfile

import numpy as np
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.server.app import with_data_shape
from fedaegis.shared.run.config import RunConfig

from flower_processes import BIN, ROOT


def test_bundle_holds_only_what_the_app_needs(tmp_path):
    res = subprocess.run([str(BIN / "flwr"), "build", "--app", str(ROOT)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    (fab,) = tmp_path.glob("*.fab")
    names = set(zipfile.ZipFile(fab).namelist()) - {".info/CONTENT"}
    assert names == {"pyproject.toml", "README.md"}  # no tests, benchmarks, deploy files or code


def test_flwr_app_writes_a_submittable_app(tmp_path):
    res = CliRunner().invoke(app, ["flwr-app", str(tmp_path / "myapp")])
    assert res.exit_code == 0, res.output
    doc = tomllib.loads((tmp_path / "myapp" / "pyproject.toml").read_text())
    assert doc["tool"]["flwr"]["app"]["components"] == {"serverapp": "fedaegis.server.app:app",
                                                        "clientapp": "fedaegis.client.app:app"}
    assert doc["tool"]["flwr"]["app"]["config"] == RunConfig().to_flower()


def test_server_fills_the_dataset_shape_it_can_read(shared_data, tmp_path):
    full = np.load(shared_data / "bloodmnist" / "bloodmnist.npz")
    np.savez(tmp_path / "blood.npz", **{k: full[k][:64] for k in full.files})
    defaults = RunConfig().to_flower()
    filled = with_data_shape({**defaults, "dataset": str(tmp_path / "blood.npz")})
    assert (filled["in-channels"], filled["num-classes"], filled["image-size"]) == (3, 8, 28)
    stated = with_data_shape({**defaults, "dataset": str(tmp_path / "blood.npz"), "num-classes": 5})
    assert stated["num-classes"] == 5 and stated["in-channels"] == 3  # a stated value is kept
    remote = with_data_shape({**defaults, "dataset": "/data/at/the/sites.npz", "in-channels": 3})
    assert remote["in-channels"] == 3 and remote["num-classes"] == 2  # unreadable here: the config's values
