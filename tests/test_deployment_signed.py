"""Only the consortium's signed bundle runs at a hospital, whoever reaches the SuperLink.

A TLS SuperLink with SuperNode authentication fetches signed bundles from the consortium's
registry (``fedaegis.orchestration.bundles serve``, its ``FLWR_SUPERGRID_API_URL``); a
SuperNode started with ``--trusted-entities`` (the consortium's Ed25519 key) must refuse a
bundle sent with ``flwr run .`` (unsigned: a submitter holding ``ca.crt`` could put any
ClientApp in it) and one signed by another key, and run the signed one. The database URL
reaches the ServerApp from its environment, never through the run config.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedaegis.orchestration.bundles import keygen, sign
from fedaegis.shared.store import RunStore

from flower_processes import BIN, ROOT, assert_no_legacy_federations, flower_env, free_port, stop, wait_healthy
from test_deployment_local import write_site
from test_deployment_secure import DEPLOY, SecureLink, sh

pytestmark = pytest.mark.slow

APP = "@fedaegis/fedaegis"
RUN_CONFIG = "num-server-rounds=1 local-epochs=1 min-sites=1 round-timeout=60 attack-samples=8"


@pytest.fixture(scope="module")
def signed_link(tmp_path_factory):
    assert_no_legacy_federations()
    root = tmp_path_factory.mktemp("signed")
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp"))
    env = flower_env(root, ray_tmp)
    env["OMP_NUM_THREADS"] = "1"
    certs, keys, signing = root / "certs", root / "keys", root / "signing"
    sh(DEPLOY / "make-certs.sh", certs, "superlink.test", cwd=root)
    sh(DEPLOY / "make-node-keys.sh", keys, "site-a", cwd=root)
    keygen(signing, "consortium")
    keygen(root / "foreign", "consortium")  # same name, another key: a forger's
    registry = root / "registry"
    fab = root / "build"
    fab.mkdir()
    sh(BIN / "flwr", "build", "--app", ROOT, cwd=fab)
    (bundle,) = fab.glob("*.fab")
    sign(bundle, signing / "consortium", registry, APP, "0.1.0")
    sign(bundle, root / "foreign" / "consortium", registry, APP, "0.1.9")

    port, reg_port = free_port(), free_port()
    (root / "flwr").mkdir()
    (root / "flwr" / "config.toml").write_text(
        '[superlink]\ndefault = "secure"\n\n'
        f'[superlink.secure]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{certs / "ca.crt"}"\n'
    )
    db = root / "runs.db"
    link = SecureLink(root=root, env={**env, "FLWR_SUPERGRID_API_URL": f"http://127.0.0.1:{reg_port}",
                                      "FEDAEGIS_DB_URL": f"sqlite:///{db}"},
                      port=port, certs=certs, keys=keys)
    try:
        link.start("registry", [sys.executable, "-m", "fedaegis.orchestration.bundles", "serve", str(registry),
                                "--port", str(reg_port)])
        proc = link.start("superlink", [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
            "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth",
            "--host", "127.0.0.1", "--port", str(port), "--database", str(root / "superlink.db"),
        ])
        wait_healthy(f"https://127.0.0.1:{port}/health", proc, link.logs["superlink"], cafile=certs / "ca.crt")
        link.node_ids["site-a"] = int(link.flwr("supernode", "register", str(keys / "site-a.pub"), "secure",
                                                "--name", "site-a")["node-id"])
        write_site(root / "site-a.npz", slice(0, 120), slice(0, 20), slice(0, 60))
        _supernode_with_trust(link)
        yield link, db
    finally:
        for p in reversed(link.procs):
            stop(p)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _supernode_with_trust(link: SecureLink) -> None:
    """site-a's SuperNode, trusting bundles signed by the consortium's key only (as in deploy/)."""
    cmd = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{link.port}",
           "--root-certificates", str(link.certs / "ca.crt"), "--host", "127.0.0.1", "--port", str(free_port()),
           "--auth-supernode-private-key", str(link.keys / "site-a"),
           "--trusted-entities", str(link.root / "signing" / "trusted-entities.yaml"),
           "--node-config", f"data-path='{link.root / 'site-a.npz'}' modality='DX' body-part='CHEST'"]
    link.start("site-a", cmd)
    deadline = time.monotonic() + 90
    while f"SuperNode ID: {link.node_ids['site-a']}" not in link.logs["site-a"].read_text():
        assert time.monotonic() < deadline, link.tails()
        time.sleep(0.5)


def _run(link: SecureLink, app: str, name: str) -> None:
    res = subprocess.run([str(BIN / "flwr"), "run", app, "secure", "--run-config", RUN_CONFIG, "--stream"],
                         cwd=ROOT, env=link.env, capture_output=True, text=True, timeout=300)
    (link.root / f"{name}.log").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{link.tails()}"


def test_only_the_consortium_signed_bundle_runs_at_the_site(signed_link):
    link, db = signed_link
    store = RunStore(f"sqlite:///{db}")

    def last_round() -> dict:
        runs = store.list_runs()
        return store.get_run(runs[-1]["uuid"])["rounds"][0] if runs else {}

    _run(link, ".", "unsigned")  # what a submitter holding ca.crt can send
    log = link.logs["site-a"].read_text()
    assert "App verification is not supported by the connected SuperLink" in log, link.tails()
    unsigned = last_round()
    assert unsigned["train_replies"] == 0 and unsigned["evaluate_replies"] == 0 and unsigned["failures"] >= 2

    _run(link, f"{APP}==0.1.9", "foreign")  # the same bundle, signed by a key the site does not trust
    assert "FAB verification failed" in link.logs["site-a"].read_text(), link.tails()
    foreign = last_round()
    assert foreign["train_replies"] == 0 and foreign["evaluate_replies"] == 0

    _run(link, f"{APP}==0.1.0", "signed")
    signed = last_round()
    assert signed["train_replies"] == 1 and signed["evaluate_replies"] == 1, (signed, link.tails())
    assert signed["metrics"]["evaluate.num-examples"] == 60
    runs = store.list_runs()
    # the two refused bundles reached no site: stored as failed (no site trained), the signed one completed
    assert [r["status"] for r in sorted(runs, key=lambda r: r["id"])] == ["failed", "failed", "completed"]
    # the run config every site receives held no database URL (it came from the ServerApp's environment)
    assert all("runs.db" not in str(v) for r in runs for v in store.get_run(r["uuid"])["config"].values())
