"""``fedaegis simulate --ray-address``: the sites run on an existing Ray cluster, not a private one.

A real head is started with ``ray start`` (127.0.0.1, free ports, its state in its own temporary
folder) and stopped by its process group at the end: ``ray stop`` would stop every Ray on the
machine. The simulation's driver gets another RAY_TMPDIR, so a private instance would be seen.
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

from fedaegis.shared.results import query
from fedaegis.shared.store import RunStore

from flower_processes import BIN, flower_env, free_port

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 300


def _pids_mentioning(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _stop_cluster(pgid: int, marker: str, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the head's process group and any process naming its temp dir."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        for pid in _pids_mentioning(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _pids_mentioning(marker):
            time.sleep(0.3)
        if not _pids_mentioning(marker):
            return


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on 127.0.0.1 with 2 CPUs; yields its GCS address."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="frc-", dir="/tmp"))  # short: Ray's socket paths
    env = flower_env(tmp_path / "head-state", ray_tmp)
    port = free_port()
    ports = {opt: str(free_port()) for opt in (
        "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")}
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", "2", "--temp-dir", str(ray_tmp), "--include-dashboard", "false",
           "--disable-usage-stats", *[x for kv in ports.items() for x in kv]]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # the head's daemons stay in this process group
    try:
        out, _ = head.communicate(timeout=120)
        assert head.returncode == 0, f"ray start failed:\n{out[-3000:]}"
        yield f"127.0.0.1:{port}", ray_tmp
    finally:
        if head.poll() is None:
            head.kill()
        _stop_cluster(head.pid, str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_simulate_runs_on_an_existing_cluster(ray_head, tmp_path, small_pneumonia):
    address, cluster_tmp = ray_head
    driver_tmp = Path(tempfile.mkdtemp(prefix="frd-", dir="/tmp"))
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    try:
        res = subprocess.run(
            [str(BIN / "fedaegis"), "simulate", "--sites", "2", "--rounds", "1", "--local-epochs", "1",
             "--dataset", small_pneumonia, "--db-url", db, "--ray-address", address, "--name", "on-cluster"],
            env=flower_env(tmp_path / "state", driver_tmp), capture_output=True, text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert not list(driver_tmp.glob("session_*")), "the driver started a private Ray instance"
    finally:
        shutil.rmtree(driver_tmp, ignore_errors=True)
    (run,) = RunStore(db).list_runs()
    detail = RunStore(db).get_run(run["id"])
    assert detail["status"] == "completed" and detail["name"] == "on-cluster"
    assert [r["number"] for r in detail["rounds"]] == [1]
    assert detail["rounds"][0]["evaluate_replies"] == 2 and detail["rounds"][0]["failures"] == 0
    assert detail["config"]["num-sites"] == 2
    # simulate's default suite (the README's main job): FGSM and PGD at four budgets, in the final round
    attacked = {(r["attack"], r["epsilon"]) for r in query.rows(detail["rounds"][-1], "attacks")}
    assert {a for a, _ in attacked} == {"fgsm", "pgd"} and len(attacked) == 8, attacked
    # the sites ran in the cluster's workers: their logs are in the cluster's session
    logs = list(cluster_tmp.glob("session_*/logs/worker-*"))
    assert any("ClientAppActor" in p.read_text(errors="replace") for p in logs if p.is_file()), \
        [p.name for p in logs]
