"""Names that become paths cannot leave the project home; private files are owner-only from the start."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from fedaegis.orchestration.sweep import SweepConfigError, build_sweep
from fedaegis.server.app import RunRecorder
from fedaegis.shared.models.checkpoint import save_checkpoint
from fedaegis.shared.run.config import ConfigError, RunConfig
from fedaegis.shared.run.paths import under
from fedaegis.shared.store import RunStore
from fedaegis.shared.store.repository import checkpoint_dir

BAD_NAMES = ["../../x", "/etc/cron.d/x", "a/b", "a\\b", "..", ".hidden", "", "x" * 151]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("bad", [n for n in BAD_NAMES if n])
@pytest.mark.parametrize("key", ["run-uuid", "run-name"])
def test_run_ids_and_names_cannot_be_paths(key, bad):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        RunConfig.from_flower({key: bad})


def test_good_names_pass():
    cfg = RunConfig.from_flower({"run-uuid": "0f" * 16, "run-name": "sweep-1:ab12cd"})
    assert cfg.run_uuid == "0f" * 16


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_sweep_name_cannot_be_a_path(bad):
    doc = {"sweep": {"name": bad, "num-sites": 2}, "config": {"num-server-rounds": 1}, "grid": {"seed": [0, 1]}}
    with pytest.raises(SweepConfigError, match="'name'"):
        build_sweep(doc)


def test_checkpoint_path_stays_under_home(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        under(tmp_path, "../x.pt")
    with pytest.raises(ValueError, match="outside"):
        under(tmp_path, "/etc/x.pt")
    store = RunStore(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ValueError, match="outside"):  # even if a RunConfig were bypassed
        RunRecorder(store, 1, "../../escaped", RunConfig())
    assert not (tmp_path.parent / "escaped.pt").exists()


def test_database_checkpoints_and_logs_are_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))
    db = tmp_path / "home" / "runs.db"
    store = RunStore(f"sqlite:///{db}")
    store.create_run(uuid="a" * 32, name="n", config={}, num_rounds=1)
    for path in [db, *db.parent.glob("runs.db-*")]:  # the WAL and shared-memory files follow the database
        assert _mode(path) == 0o600, path
    assert _mode(db.parent) == 0o700
    ckpt_dir = checkpoint_dir(tmp_path / "home")
    ckpt = save_checkpoint(ckpt_dir / "a.pt", {"w": torch.zeros(2)},
                           {"model": "cnn", "norm": "group", "in_channels": 1, "num_classes": 2, "spatial_dims": 2})
    assert _mode(ckpt_dir) == 0o700 and _mode(ckpt) == 0o600
    ckpt.chmod(0o644)  # an old world-readable checkpoint is replaced by an owner-only one
    save_checkpoint(ckpt, {"w": torch.ones(2)},
                    {"model": "cnn", "norm": "group", "in_channels": 1, "num_classes": 2, "spatial_dims": 2})
    assert _mode(ckpt) == 0o600


def test_a_database_password_in_the_shared_run_config_is_refused():
    from fedaegis.server.app import refuse_shared_credentials

    with pytest.raises(ConfigError, match="'db-url' holds a password.*FEDAEGIS_DB_URL"):
        refuse_shared_credentials({"db-url": "postgresql://fedaegis:s3cret@db:5432/fedaegis"})
    refuse_shared_credentials({"db-url": "sqlite:////tmp/x.db"})  # no secret in it
    refuse_shared_credentials({})
