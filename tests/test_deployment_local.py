"""A real, insecure local deployment: one SuperLink, two SuperNodes with their own data, ``flwr run``.

Every server binds 127.0.0.1 on free ports; each SuperNode's ``--node-config`` names its own
MedMNIST ``.npz`` (cut from the embedded PneumoniaMNIST); the app is submitted with
``flwr run`` and read back from the database. Every process is stopped by PID at the end.
The commands are the ones in deploy/README.md.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fedaegis.shared.store import RunStore

from flower_processes import BIN, ROOT, assert_no_legacy_federations, flower_env, free_port, stop

pytestmark = pytest.mark.slow

EMBEDDED = ROOT / "shared" / "data" / "embedded" / "pneumoniamnist.npz"
RUN_TIMEOUT_S = 240

# (train, val, test) slices of the embedded splits for each site; the test splits differ in size.
SITES = {
    "site-a": (slice(0, 400), slice(0, 50), slice(0, 300)),
    "site-b": (slice(400, 800), slice(50, 100), slice(300, 624)),
}


def write_site(path: Path, train: slice, val: slice, test: slice) -> int:
    """A MedMNIST-format .npz with parts of the embedded splits; returns its test count."""
    src = np.load(EMBEDDED)
    cut = {"train": train, "val": val, "test": test}
    np.savez(path, **{k: src[k][cut[k.split("_")[0]]] for k in src.files})
    return int(np.load(path)["test_labels"].shape[0])


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"flower-superlink exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"SuperLink not healthy after {timeout_s}s:\n{log.read_text()[-3000:]}")


def test_superlink_two_supernodes_flwr_run(tmp_path):
    assert_no_legacy_federations()
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp"))
    env = flower_env(tmp_path, ray_tmp)
    # Two sites share 2 cores here: one torch thread per ClientApp process avoids oversubscription.
    env["OMP_NUM_THREADS"] = "1"

    test_counts = {}
    for name, cuts in SITES.items():
        test_counts[name] = write_site(tmp_path / f"{name}.npz", *cuts)

    link_port = free_port()
    # The SuperLink connection `flwr run` uses, in $FLWR_HOME/config.toml (Flower 1.41).
    (tmp_path / "flwr").mkdir()
    (tmp_path / "flwr" / "config.toml").write_text(
        '[superlink]\ndefault = "local-deployment"\n\n'
        f'[superlink.local-deployment]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )

    procs: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}

    def start(name: str, cmd: list[str], cwd: Path = tmp_path) -> subprocess.Popen:
        logs[name] = tmp_path / f"{name}.log"
        with logs[name].open("w") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        procs.append(proc)
        return proc

    def tails() -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text()[-2500:]}" for n, p in logs.items())

    started = time.monotonic()
    try:
        link = start("superlink", [
            str(BIN / "flower-superlink"), "--insecure",
            "--host", "127.0.0.1", "--port", str(link_port),
            "--database", str(tmp_path / "superlink.db"),
        ])
        wait_healthy(f"http://127.0.0.1:{link_port}/health", link, logs["superlink"])
        for name in SITES:
            start(name, [
                str(BIN / "flower-supernode"), "--insecure",
                "--superlink", f"127.0.0.1:{link_port}",
                "--host", "127.0.0.1", "--port", str(free_port()),
                "--node-config", f"data-path='{tmp_path / f'{name}.npz'}' modality='DX' body-part='CHEST'",
            ])
        run = start("flwr-run", [
            str(BIN / "flwr"), "run", ".", "local-deployment",
            "--run-config", f"num-server-rounds=2 local-epochs=1 db-url='{db_url}'",
            "--stream",
        ], cwd=ROOT)
        try:
            rc = run.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"flwr run did not finish in {RUN_TIMEOUT_S}s\n{tails()}")
        assert rc == 0, tails()
        for proc in procs[:-1]:
            assert proc.poll() is None, f"a SuperLink/SuperNode exited early\n{tails()}"
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"deployment run took {time.monotonic() - started:.1f}s")
    assert all(p.poll() is not None for p in procs)

    store = RunStore(db_url)
    (summary,) = store.list_runs()
    assert summary["status"] == "completed", (summary, tails())
    result = store.get_run(summary["uuid"])
    assert [r["number"] for r in result["rounds"]] == [1, 2]
    total = sum(test_counts.values())
    assert total == 624
    for rnd in result["rounds"]:
        assert rnd["train_replies"] == 2 and rnd["evaluate_replies"] == 2 and rnd["failures"] == 0
        m = rnd["metrics"]
        assert m["evaluate.num-examples"] == total
        assert m["evaluate.accuracy"] == pytest.approx(m["evaluate.correct"] / total)
        assert len(rnd["sites"]) == 2
        site_n = sorted(
            next(v["value"] for v in rows if v["phase"] == "evaluate" and v["name"] == "num-examples")
            for rows in rnd["sites"].values()
        )
        assert site_n == sorted(test_counts.values())  # each site evaluated exactly its own file
        site_skipped = [
            next(v["value"] for v in rows if v["phase"] == "evaluate" and v["name"] == "skipped")
            for rows in rnd["sites"].values()
        ]
        assert site_skipped == [0, 0]
