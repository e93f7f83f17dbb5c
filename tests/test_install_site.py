"""A hospital installs ``fedaegis[site]`` alone: no Ray, no PostgreSQL driver, no plotting, and its
ClientApp trains and evaluates against a real SuperLink.

A fresh virtualenv (no system site-packages) gets torch (pinned by constraints.txt) and the site
extra from this checkout; its ``flower-supernode`` runs the installed ClientApp (PYTHONPATH
cleared, so nothing of the checkout is imported there); the SuperLink and ServerApp come from the
test's own environment. Every process is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fedaegis.orchestration.runtime import write_app
from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.store import RunStore

from flower_processes import BIN, ROOT, flower_env, free_port, stop, wait_healthy

pytestmark = pytest.mark.slow

EMBEDDED = ROOT / "shared" / "data" / "embedded" / "pneumoniamnist.npz"
PIP_TIMEOUT_S = 900
RUN_TIMEOUT_S = 240


def _pip(venv: Path, *args: str) -> None:
    res = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", *args],
                         capture_output=True, text=True, timeout=PIP_TIMEOUT_S, cwd=venv.parent)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.fixture(scope="module")
def site_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("site") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "torch==2.13.0")
    src = tmp_path_factory.mktemp("src") / "fedaegis"  # a clean copy: no .venv, no caches
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build"))
    _pip(venv, "-c", str(ROOT / "constraints.txt"), f"{src}[site]")
    return venv


def test_site_install_has_no_server_or_simulation_dependencies(site_venv):
    probe = ("import importlib.util, json, fedaegis.client.app, fedaegis; "
             "print(json.dumps({'file': fedaegis.__file__, 'missing': [m for m in "
             "('ray', 'psycopg', 'matplotlib') if importlib.util.find_spec(m) is None]}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([str(site_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                         env=env, timeout=120, cwd=site_venv.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(site_venv))
    # (SQLAlchemy itself comes with Flower, which keeps its SuperNode state with it)
    assert found["missing"] == ["ray", "psycopg", "matplotlib"]


def test_site_install_runs_a_clientapp_against_a_superlink(site_venv, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp"))
    env = flower_env(tmp_path, ray_tmp)
    env["OMP_NUM_THREADS"] = "1"
    site_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # only the site's installed copy
    site_env["PATH"] = f"{site_venv / 'bin'}{os.pathsep}{env['PATH']}"  # its flwr-clientapp
    data = tmp_path / "site.npz"
    src = np.load(EMBEDDED)
    np.savez(data, **{k: src[k][:300] for k in src.files})
    port = free_port()
    (tmp_path / "flwr").mkdir()
    (tmp_path / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "link"\n\n[superlink.link]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    app = write_app(tmp_path / "app", {"serverapp": "fedaegis.server.app:app", "clientapp": "fedaegis.client.app:app"},
                    {**RunConfig().to_flower(), "num-server-rounds": 1, "local-epochs": 1, "min-sites": 1,
                     "db-url": db_url})
    procs: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}

    def start(name: str, cmd: list[str], penv: dict[str, str]) -> subprocess.Popen:
        logs[name] = tmp_path / f"{name}.log"
        with logs[name].open("w") as out:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=penv, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        return procs[-1]

    def tails() -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text()[-2500:]}" for n, p in logs.items())

    try:
        link = start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                   "--port", str(port), "--database", str(tmp_path / "superlink.db")], env)
        wait_healthy(f"http://127.0.0.1:{port}/health", link, logs["superlink"])
        start("site", [str(site_venv / "bin" / "flower-supernode"), "--insecure", "--superlink",
                       f"127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(free_port()),
                       "--node-config", f"data-path='{data}' modality='DX' body-part='CHEST'"], site_env)
        run = start("flwr-run", [str(BIN / "flwr"), "run", str(app), "link", "--stream"], env)
        try:
            rc = run.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"flwr run did not finish in {RUN_TIMEOUT_S}s\n{tails()}")
        assert rc == 0, tails()
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    (summary,) = RunStore(db_url).list_runs()
    assert summary["status"] == "completed", tails()
    (rnd,) = RunStore(db_url).get_run(summary["uuid"])["rounds"]
    assert rnd["train_replies"] == 1 and rnd["evaluate_replies"] == 1 and rnd["failures"] == 0
    assert rnd["metrics"]["evaluate.num-examples"] == 300
