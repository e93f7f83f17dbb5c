"""Test-wide settings: state stays in a temporary folder, never in the user's home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_STATE = Path(tempfile.mkdtemp(prefix="fedaegis-tests-"))
os.environ["FEDAEGIS_HOME"] = str(_STATE / "home")
os.environ["FLWR_HOME"] = str(_STATE / "flwr")
os.environ.setdefault("RAY_TMPDIR", "/tmp/fedaegis-ray-tests")
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
os.environ.pop("FEDAEGIS_DB_URL", None)
# the sites' own policy (their environment, inherited by Ray workers and SuperNodes): permissive,
# so end-to-end figures are exact; the site-policy tests name their own files or the defaults
os.environ["FEDAEGIS_SITE_POLICY"] = str(Path(__file__).resolve().parent / "policies" / "permissive.toml")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two test processes share the machine's cores: one torch thread each, not two each
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real medical data beside the checkout (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# The same device tests run on the CPU everywhere and on CUDA wherever a GPU is present
# (marked `cuda`: `pytest -m cuda` runs only those); here they are skipped, not failed.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not _cuda_available(), reason="no CUDA device here")])]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """A device a site may compute on: 'cpu', and 'cuda' where torch sees a GPU."""
    return request.param
