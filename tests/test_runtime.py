"""Flower's Simulation Runtime as ``fedaegis simulate`` drives it: a private SuperLink per run on a
free port, and nothing it started left behind, after a failure or a Ctrl-C alike.

Each test gives the run its own temporary folder (the SuperLink's state) and Ray folder, so the
processes of this run, and only them, can be found by those paths.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fedaegis.orchestration.runtime import RuntimeFailure
from fedaegis.orchestration.simulation import SimulationResources, simulate

from flower_processes import BIN, flower_env, pids_with_args

pytestmark = pytest.mark.slow


def _mentioning(*markers: str) -> list[int]:
    """Live processes whose command line or environment names one of ``markers``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(m.encode() in text for m in markers) and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def test_failed_run_raises_and_leaves_no_process(tmp_path, monkeypatch):
    state = tmp_path / "tmp"
    state.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-rt-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(state))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    try:
        with pytest.raises(RuntimeFailure, match="ended finished:failed"):
            # the ServerApp fails inside Flower's process: there is no run "nope" to resume
            simulate({"num-server-rounds": 1, "local-epochs": 1, "db-url": f"sqlite:///{tmp_path / 'runs.db'}",
                      "resume-run": "nope"}, num_sites=2, resources=SimulationResources(num_cpus=2))
        assert not _mentioning(str(state), str(ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ctrl_c_stops_the_superlink_and_all_it_started(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-rt-", dir="/tmp"))
    env = {**flower_env(tmp_path, ray_tmp), "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "simulate.log"
    cmd = [str(BIN / "fedaegis"), "simulate", "--sites", "2", "--rounds", "20", "--local-epochs", "1",
           "--attacks", "", "--num-cpus", "2", "--db-url", f"sqlite:///{tmp_path / 'runs.db'}"]
    with log.open("w") as out:
        # SIGINT as at a terminal: a pytest started in the background (`cmd &`) hands its children
        # SIGINT ignored, and Python keeps an inherited SIG_IGN (as tests/test_run_status.py does)
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "round 1/20" not in log.read_text():  # sites are training
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        links = pids_with_args("flower-superlink", str(tmp_path))
        assert len(links) == 1, log.read_text()[-3000:]
        assert _mentioning(str(ray_tmp)), "the run's Ray should be up"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at the terminal: the CLI's process group
        proc.wait(timeout=60)
        assert proc.returncode != 0
        assert not _mentioning(str(tmp_path), str(ray_tmp)), log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _mentioning(str(tmp_path), str(ray_tmp)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
