"""True run status and reproducible runs, on a real Flower simulation on Ray.

A run whose every site fails is stored as ``failed`` with one line per distinct site error and
its count; the same config and seed give the same stored numbers.
"""

from __future__ import annotations

import pytest

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.orchestration.runtime import RuntimeFailure
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

SMALL = {"num-server-rounds": 2, "local-epochs": 1, "attacks": "fgsm", "epsilons": "8/255", "attack-samples": 32}


def test_a_run_where_every_site_fails_is_stored_failed(db_url):
    from fedaegis.tests.broken_client import FAILURE

    with pytest.raises(RuntimeFailure) as exc:
        simulate({**SMALL, "db-url": db_url, "run-name": "broken", "run-uuid": "b" * 32}, num_sites=2,
                 resources=SimulationResources(num_cpus=2), client_app="fedaegis.tests.broken_client:app")
    run = RunStore(db_url).get_run("b" * 32)
    assert run["status"] == "failed"
    # 2 sites x 2 rounds x (train + evaluate): one distinct error, counted
    assert run["error"].startswith("no site trained in any round; site errors: 8x ")
    assert FAILURE in run["error"] and run["error"].count(FAILURE) == 1
    assert exc.value is not None  # Flower reports the run failed; the store says why


def _stored_numbers(db_url: str, ref: str) -> list[tuple]:
    run = RunStore(db_url).get_run(ref)
    rows = []
    for rnd in run["rounds"]:
        rows += [(rnd["number"], "", r["phase"], r["name"], r["attack"], r["epsilon"], r["value"])
                 for r in rnd["metric_rows"]]
        # sites are known by node ids that differ between runs: compare their sorted values
        rows += sorted((rnd["number"], "site", r["phase"], r["name"], r["attack"], r["epsilon"], r["value"])
                       for rows_ in rnd["sites"].values() for r in rows_)
    return sorted(rows, key=repr)


def test_the_same_config_and_seed_store_the_same_numbers(tmp_path, small_pneumonia):
    uuids = []
    for i in range(2):
        db = f"sqlite:///{tmp_path / f'run{i}.db'}"
        uuids.append((db, simulate({**SMALL, "db-url": db, "seed": 3, "dataset": small_pneumonia}, num_sites=3,
                                   resources=SimulationResources(num_cpus=2))))
    first, second = (_stored_numbers(db, ref) for db, ref in uuids)
    assert len(first) > 50 and first == second


def test_ctrl_c_stores_the_run_as_interrupted_and_resumable(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from fedaegis.server.resume import resume_point

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    env = {**os.environ, "FEDAEGIS_HOME": str(tmp_path / "home")}  # Ray: the suite's short RAY_TMPDIR
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fedaegis.orchestration.cli import main; main()", "simulate", "--sites", "2",
         "--rounds", "3", "--local-epochs", "1", "--attacks", "", "--db-url", db],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal
    )
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "round 1/3" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, line + rest
    assert "stored as interrupted" in " ".join(rest.split())
    (run,) = RunStore(db).list_runs()
    assert run["status"] == "interrupted" and run["rounds_completed"] >= 1
    assert resume_point(RunStore(db), str(run["id"]), db).done == run["rounds_completed"]
