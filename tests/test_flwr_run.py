"""End to end through Flower's own CLI: ``flwr run .`` on the managed local SuperLink.

``flwr run`` (Flower 1.41) starts a local SuperLink in simulation mode in the background and
leaves it running. The test gives it its own ports and ``FLWR_HOME``, waits for the run with
``--stream``, reads the run back from the database, and always stops that SuperLink (and
everything it started) by PID.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fedaegis.shared.store import RunStore

from flower_processes import (
    BIN, ROOT, assert_no_legacy_federations, flower_env, free_port, pids_with_args, stop_tree,
)

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 240


def test_flwr_run_local_simulation(tmp_path):
    assert_no_legacy_federations()
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp"))  # Ray's socket paths must be short
    env = flower_env(tmp_path, ray_tmp)
    # The managed local SuperLink listens on fixed ports by default (39091/39093): give it free
    # ones, so it can neither clash with nor submit to another SuperLink on this machine.
    env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(free_port())
    env["FLWR_LOCAL_CONTROL_API_PORT"] = str(free_port())
    log = tmp_path / "flwr-run.log"
    cmd = [
        str(BIN / "flwr"), "run", ".", "local",  # "local" (address ":local:") is in the default config.toml
        "--run-config", f"num-server-rounds=2 local-epochs=1 db-url='{db_url}'",
        "--federation-config", "num-supernodes=2 client-resources-num-cpus=1",
        "--stream",
    ]
    started = time.monotonic()
    proc = None
    try:
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"flwr run did not finish in {RUN_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
        text = log.read_text()
        assert rc == 0, text[-4000:]
        assert "Successfully started run" in text, text[-4000:]
    finally:
        if proc is not None and proc.poll() is None:
            stop_tree(proc.pid)
            proc.wait()
        superlinks = pids_with_args("flower-superlink", str(tmp_path / "flwr"))
        for pid in superlinks:
            stop_tree(pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"flwr run took {time.monotonic() - started:.1f}s")
    assert superlinks, "flwr run should have started a local SuperLink under our FLWR_HOME"
    assert not pids_with_args("flower-superlink", str(tmp_path / "flwr"))
    # The ServerApp did not fall back to $FEDAEGIS_HOME's default database.
    assert not (tmp_path / "home" / "fedaegis.db").exists()

    store = RunStore(db_url)
    (summary,) = store.list_runs()
    assert summary["status"] == "completed", summary
    assert summary["flwr_run_id"] and summary["flwr_run_id"] in text
    # the fedaegis run id and its database, through Flower's log stream
    assert f"[fedaegis] INFO fedaegis run {summary['id']} ({summary['uuid']}) stored in {db_url}" in text, text[-4000:]
    run = store.get_run(summary["uuid"])
    assert [r["number"] for r in run["rounds"]] == [1, 2]
    for rnd in run["rounds"]:
        assert rnd["train_replies"] == 2 and rnd["evaluate_replies"] == 2 and rnd["failures"] == 0
        m = rnd["metrics"]
        assert m["evaluate.num-examples"] == 624  # the whole PneumoniaMNIST test split
        assert 0.0 <= m["evaluate.accuracy"] <= 1.0
        assert m["evaluate.accuracy"] == pytest.approx(m["evaluate.correct"] / 624)
    assert run["config"]["num-server-rounds"] == 2 and run["config"]["local-epochs"] == 1
    assert run["rounds"][-1]["metrics"]["evaluate.accuracy"] > 0.6
