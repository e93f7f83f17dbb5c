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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with end-to-end (``slow``) tests first, each file's tests in their own order.

    pytest-xdist (``--dist loadfile --no-loadscope-reorder``) hands whole files to its workers in
    this order: the long runs start early and the short unit-test files fill the end, so neither
    worker is left alone with a minutes-long file while the other idles.
    """
    end_to_end = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in end_to_end)  # stable: files stay whole and in order


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real medical data beside the checkout (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_pneumonia(tmp_path_factory) -> str:
    """The embedded PneumoniaMNIST with 400 training images and every val/test image (624 to test).

    Real X-rays for runs whose assertions do not depend on how long the sites train (audits,
    reproducibility, release policies): local training, most of a small run's time, is 12 times
    shorter, while every figure about the test split keeps its size.
    """
    import numpy as np

    from fedaegis.shared.data.sources import embedded_path

    src = np.load(embedded_path("pneumoniamnist"))
    path = tmp_path_factory.mktemp("small-pneumonia") / "pneumonia-small.npz"
    np.savez(path, **{k: src[k][:400] if k.startswith("train_") else src[k] for k in src.files})
    return str(path)


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
