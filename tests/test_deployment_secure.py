"""A real secure rollout: TLS and SuperNode authentication (Flower 1.41), then a SuperNode dies.

The certificates and node keys come from ``deploy/make-certs.sh`` and ``deploy/make-node-keys.sh``;
the SuperLink runs with ``--ssl-*`` and ``--enable-supernode-auth``, the node keys are registered
with ``flwr supernode register`` over the TLS Control API, and three SuperNodes, each with its own
MedMNIST ``.npz``, connect with ``--root-certificates`` and ``--auth-supernode-private-key``.
One SuperNode is SIGKILLed once round 1 is in the database: the run must still complete and record
the failure. SuperNodes with an unregistered key (or none) must be refused. Everything binds
127.0.0.1 on free ports and every process is stopped by PID. Commands as in deploy/README.md.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedaegis.shared.store import RunStore

from flower_processes import (
    BIN, ROOT, assert_no_legacy_federations, flower_env, free_port, kill_tree, stop, wait_healthy,
)
from test_deployment_local import write_site

pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy"
RUN_TIMEOUT_S = 200
ROUND_TIMEOUT_S = 45  # a dead node's reply is given up after this (Flower marks it offline in <= 60 s)

# (train, val, test) slices of the embedded PneumoniaMNIST per site; small, distinct test splits.
SITES = {
    "site-a": (slice(0, 200), slice(0, 30), slice(0, 100)),
    "site-b": (slice(200, 400), slice(30, 60), slice(100, 220)),
    "site-c": (slice(400, 600), slice(60, 90), slice(220, 360)),
}
VICTIM = "site-c"


@dataclass
class SecureLink:
    """A TLS SuperLink with SuperNode authentication, its files, and the processes started on it."""

    root: Path
    env: dict[str, str]
    port: int
    certs: Path
    keys: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)  # registered site -> node id

    def start(self, name: str, cmd: list[str], cwd: Path | None = None) -> subprocess.Popen:
        self.logs[name] = self.root / f"{name}.log"
        with self.logs[name].open("w") as out:
            proc = subprocess.Popen(cmd, cwd=cwd or self.root, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_superlink(self) -> subprocess.Popen:
        """The TLS SuperLink with SuperNode authentication (as deploy/README.md runs it), once healthy."""
        proc = self.start("superlink", [
            str(BIN / "flower-superlink"),
            "--ssl-ca-certfile", str(self.certs / "ca.crt"),
            "--ssl-certfile", str(self.certs / "server.pem"),
            "--ssl-keyfile", str(self.certs / "server.key"),
            "--enable-supernode-auth",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--database", str(self.root / "superlink.db"),
        ])
        wait_healthy(f"https://127.0.0.1:{self.port}/health", proc, self.logs["superlink"], cafile=self.certs / "ca.crt")
        return proc

    def flwr(self, *args: str) -> dict:
        """A `flwr` command against this SuperLink (connection "secure"), its JSON output."""
        res = subprocess.run([str(BIN / "flwr"), *args, "--format", "json"], cwd=self.root,
                             env=self.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"flwr {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        return json.loads(res.stdout[res.stdout.index("{"):])

    def nodes(self) -> dict[int, str]:
        """node id -> status, as `flwr supernode list` reports them."""
        return {int(n["node-id"]): n["status"] for n in self.flwr("supernode", "list")["nodes"]}

    def supernode(self, name: str, key: str | None, data: Path | None = None) -> subprocess.Popen:
        cmd = [
            str(BIN / "flower-supernode"),
            "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.certs / "ca.crt"),
            "--host", "127.0.0.1", "--port", str(free_port()),
        ]
        if key:
            cmd += ["--auth-supernode-private-key", str(self.keys / key)]
        if data:
            cmd += ["--node-config", f"data-path='{data}' modality='DX' body-part='CHEST'"]
        return self.start(name, cmd)

    def tails(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.read_text()[-2500:]}" for n, p in self.logs.items())


def sh(*cmd: str | Path, cwd: Path) -> str:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{cmd}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def secure_link(tmp_path_factory):
    assert_no_legacy_federations()
    root = tmp_path_factory.mktemp("secure")
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp"))
    env = flower_env(root, ray_tmp)
    env["OMP_NUM_THREADS"] = "1"  # three sites share 2 cores here

    certs, keys = root / "certs", root / "keys"
    sh(DEPLOY / "make-certs.sh", certs, "superlink.test", cwd=root)
    sh(DEPLOY / "make-node-keys.sh", keys, *SITES, "intruder", cwd=root)
    for f in ("ca.crt", "ca.key", "server.pem", "server.key"):
        assert (certs / f).is_file(), f
    for site in (*SITES, "intruder"):
        assert (keys / site).read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert (keys / f"{site}.pub").read_text().startswith("ecdsa-sha2-nistp256 ")
    san = sh("openssl", "x509", "-in", certs / "server.pem", "-noout", "-ext", "subjectAltName", cwd=root)
    assert "IP Address:127.0.0.1" in san and "DNS:localhost" in san and "DNS:superlink.test" in san

    port = free_port()
    # The connection `flwr` uses: TLS, verified against our CA (no `insecure`).
    (root / "flwr").mkdir()
    (root / "flwr" / "config.toml").write_text(
        '[superlink]\ndefault = "secure"\n\n'
        f'[superlink.secure]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{certs / "ca.crt"}"\n'
    )
    link = SecureLink(root=root, env=env, port=port, certs=certs, keys=keys)
    try:
        link.start_superlink()
        for site in SITES:
            out = link.flwr("supernode", "register", str(keys / f"{site}.pub"), "secure", "--name", site)
            link.node_ids[site] = int(out["node-id"])
        assert link.nodes() == {nid: "registered" for nid in link.node_ids.values()}
        yield link
    finally:
        for p in reversed(link.procs):
            stop(p)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_unregistered_supernodes_are_refused(secure_link):
    link = secure_link
    intruders = {
        "intruder": (link.supernode("intruder", key="intruder"), "Failed to activate SuperNode"),
        # without a key the SuperNode makes one and asks to register itself: refused under auth
        "keyless": (link.supernode("keyless", key=None), "All SuperNodes must be registered via the CLI"),
    }
    for name, (proc, reason) in intruders.items():
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the unregistered SuperNode {name} is still running\n{link.tails()}")
        log = link.logs[name].read_text()
        assert rc != 0, log
        assert "Exit Code: 305" in log and reason in log, log  # SUPERNODE_CONNECTION_ERROR
    superlink_log = link.logs["superlink"].read_text()
    assert "/v1/fleet/activate-node HTTP/1.1\" 412" in superlink_log
    assert "/v1/fleet/register-node HTTP/1.1\" 412" in superlink_log
    # The SuperLink knows the three registered keys only, none of them online.
    assert link.nodes() == {nid: "registered" for nid in link.node_ids.values()}


def _rounds_stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM rounds").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_secure_rollout_survives_a_dead_supernode(secure_link):
    link = secure_link
    db = link.root / "runs.db"
    db_url = f"sqlite:///{db}"
    test_counts = {site: write_site(link.root / f"{site}.npz", *cuts) for site, cuts in SITES.items()}
    sites = {site: link.supernode(site, key=site, data=link.root / f"{site}.npz") for site in SITES}

    deadline = time.monotonic() + 90
    while not all(f"SuperNode ID: {link.node_ids[s]}" in link.logs[s].read_text() for s in SITES):
        assert time.monotonic() < deadline, f"SuperNodes not connected\n{link.tails()}"
        assert all(p.poll() is None for p in sites.values()), link.tails()
        time.sleep(0.5)
    # all three in round 1: min-sites=2 alone would let the run start with two
    assert link.nodes() == {nid: "online" for nid in link.node_ids.values()}, link.tails()

    started = time.monotonic()
    run = link.start("flwr-run", [
        str(BIN / "flwr"), "run", ".", "secure",
        "--run-config",
        f"num-server-rounds=2 local-epochs=1 min-sites=2 round-timeout={ROUND_TIMEOUT_S} db-url='{db_url}'",
        "--stream",
    ], cwd=ROOT)

    # Round 1 stored, round 2 under way: the victim dies with its SuperExec and ClientApps.
    while _rounds_stored(db) < 1:
        assert run.poll() is None, f"flwr run ended before round 1 was stored\n{link.tails()}"
        assert time.monotonic() - started < RUN_TIMEOUT_S, f"no round stored\n{link.tails()}"
        time.sleep(0.5)
    killed = kill_tree(sites[VICTIM].pid)
    assert len(killed) >= 2, killed  # the SuperNode and its SuperExec at least
    sites[VICTIM].wait(timeout=10)
    killed_at = time.monotonic() - started

    try:
        rc = run.wait(timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not finish in {RUN_TIMEOUT_S}s\n{link.tails()}")
    print(f"secure run took {time.monotonic() - started:.1f}s, {VICTIM} killed after {killed_at:.1f}s")
    assert rc == 0, link.tails()
    assert link.procs[0].poll() is None, f"the SuperLink died\n{link.tails()}"
    for site, proc in sites.items():
        assert site == VICTIM or proc.poll() is None, f"{site} exited\n{link.tails()}"
    status = link.nodes()
    print("nodes after the run:", {s: status[n] for s, n in link.node_ids.items()})
    assert all(status[link.node_ids[s]] == "online" for s in SITES if s != VICTIM), status

    store = RunStore(db_url)
    (summary,) = store.list_runs()
    assert summary["status"] == "completed", (summary, link.tails())
    result = store.get_run(summary["uuid"])
    first, second = result["rounds"]
    assert (first["number"], second["number"]) == (1, 2)

    def evaluated(rnd: dict) -> dict[int, float]:
        return {
            int(node): next(v["value"] for v in rows if v["phase"] == "evaluate" and v["name"] == "num-examples")
            for node, rows in rnd["sites"].items()
        }

    # Round 1: all three sites, each evaluated on exactly its own test split.
    assert (first["train_replies"], first["evaluate_replies"], first["failures"]) == (3, 3, 0), first
    assert evaluated(first) == {link.node_ids[s]: n for s, n in test_counts.items()}
    assert first["metrics"]["evaluate.num-examples"] == sum(test_counts.values())

    # Round 2: the dead site is a recorded failure (an error reply from the SuperLink once it marks
    # the node offline, or no reply within round-timeout); the run goes on with the two others.
    survivors = {link.node_ids[s]: n for s, n in test_counts.items() if s != VICTIM}
    assert second["train_replies"] == 2 and second["evaluate_replies"] == 2, second
    assert second["failures"] >= 1, second
    assert evaluated(second) == survivors
    assert second["metrics"]["evaluate.num-examples"] == sum(survivors.values())
    m = second["metrics"]
    assert m["evaluate.accuracy"] == pytest.approx(m["evaluate.correct"] / m["evaluate.num-examples"])
