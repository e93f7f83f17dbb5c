"""The fleet gateway of ``deploy/``, run for real: hospitals reach the Fleet API, never the Control API.

Compose and Kubernetes put ``deploy/k8s/fleet-gateway.conf`` (nginx) between the hospitals and the
SuperLink, because Flower 1.41's open-source Control API (submitting runs, registering nodes,
reading logs) has no login. Here that very file runs in Debian's nginx (``tests/setup.sh`` installs
it) in front of a real TLS SuperLink with SuperNode authentication; only its listen address,
upstream address and certificate paths are rewritten to this machine's. Checked:

* the Control API through the gateway answers 403 (``flwr`` against it fails; an HTTPS request
  to ``/v1/control/...`` is refused by nginx and never reaches the SuperLink), ``/health`` passes;
* two registered SuperNodes that know only the gateway's address join, and a real ``flwr run``
  (one round of training and evaluation, submitted to the SuperLink directly, as an operator
  does) completes with both sites' replies, its Fleet traffic in the gateway's access log.

Everything binds 127.0.0.1 on free ports; every process is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fedaegis.shared.store import RunStore

from flower_processes import BIN, ROOT, assert_no_legacy_federations, flower_env, free_port, stop, wait_healthy
from test_deployment_local import write_site
from test_deployment_secure import DEPLOY, SecureLink, sh

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SITES = {"site-a": (slice(0, 160), slice(0, 20), slice(0, 60)), "site-b": (slice(160, 320), slice(20, 40), slice(60, 140))}


def gateway_conf(root: Path, certs: Path, listen: int, superlink: int) -> Path:
    """``deploy/k8s/fleet-gateway.conf`` with this machine's ports and paths; nothing else changed."""
    text = (DEPLOY / "k8s" / "fleet-gateway.conf").read_text()
    for old, new in (("listen 9091 ssl;", f"listen 127.0.0.1:{listen} ssl;"),
                     ("https://superlink:9091", f"https://127.0.0.1:{superlink}"),
                     ("/certs/", f"{certs}/")):
        assert old in text, f"fleet-gateway.conf no longer holds {old!r}"
        text = text.replace(old, new)
    tmp = root / "nginx-tmp"
    tmp.mkdir()
    local = "".join(f"    {d}_temp_path {tmp / d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", f"http {{\n    access_log {root / 'gateway-access.log'};\n{local}", 1)
    head = f"pid {root / 'nginx.pid'};\nerror_log {root / 'gateway-error.log'};\n"
    if os.geteuid() == 0:  # workers would otherwise drop to www-data, which cannot read the test's keys
        head += "user root root;\n"
    conf = root / "fleet-gateway.conf"
    conf.write_text(head + text)
    return conf


@pytest.fixture(scope="module")
def gated_link(tmp_path_factory):
    if NGINX is None:
        pytest.skip("nginx is not installed (tests/setup.sh installs Debian's nginx-light when run as root)")
    assert_no_legacy_federations()
    root = tmp_path_factory.mktemp("gateway")
    ray_tmp = Path(tempfile.mkdtemp(prefix="fa-ray-", dir="/tmp"))
    env = flower_env(root, ray_tmp)
    env["OMP_NUM_THREADS"] = "1"
    certs, keys = root / "certs", root / "keys"
    sh(DEPLOY / "make-certs.sh", certs, "superlink", cwd=root)  # the name the gateway verifies
    sh(DEPLOY / "make-node-keys.sh", keys, *SITES, cwd=root)
    port, gw_port = free_port(), free_port()
    (root / "flwr").mkdir()
    (root / "flwr" / "config.toml").write_text(
        '[superlink]\ndefault = "secure"\n\n'
        f'[superlink.secure]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{certs / "ca.crt"}"\n\n'
        f'[superlink.gateway]\naddress = "127.0.0.1:{gw_port}"\nroot-certificates = "{certs / "ca.crt"}"\n'
    )
    link = SecureLink(root=root, env=env, port=port, certs=certs, keys=keys)
    try:
        link.start_superlink()
        conf = gateway_conf(root, certs, gw_port, port)
        check = subprocess.run([NGINX, "-t", "-q", "-c", str(conf), "-p", str(root)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        gateway = link.start("gateway", [NGINX, "-c", str(conf), "-p", str(root), "-g", "daemon off;"])
        wait_healthy(f"https://127.0.0.1:{gw_port}/health", gateway, root / "gateway-error.log", cafile=certs / "ca.crt")
        for site in SITES:
            out = link.flwr("supernode", "register", str(keys / f"{site}.pub"), "secure", "--name", site)
            link.node_ids[site] = int(out["node-id"])
        link.gateway_port = gw_port  # type: ignore[attr-defined]
        yield link
    finally:
        for p in reversed(link.procs):
            stop(p)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _post(url: str, cafile: Path) -> int:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ssl.create_default_context(cafile=str(cafile))) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_control_api_is_not_reachable_through_the_gateway(gated_link):
    link = gated_link
    gw = f"https://127.0.0.1:{link.gateway_port}"
    superlink_log = link.logs["superlink"]
    before = superlink_log.read_text().count("/v1/control/")
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/control/register-supernode", "/v1/x"):
        assert _post(gw + path, link.certs / "ca.crt") == 403, path
    # `flwr` pointed at the gateway (as a hospital could) cannot list nodes or runs
    for args in (("supernode", "list"), ("ls",)):
        res = subprocess.run([str(BIN / "flwr"), *args, "gateway", "--format", "json"], cwd=link.root,
                             env=link.env, capture_output=True, text=True, timeout=60)
        out = json.loads(res.stdout[res.stdout.index("{"):])
        assert out["success"] is False and "403 Forbidden" in out["error-message"], (args, out)
    assert superlink_log.read_text().count("/v1/control/") == before, "a Control API request got through"
    access = (link.root / "gateway-access.log").read_text()
    assert '"POST /v1/control/list-runs HTTP/1.1" 403' in access
    # the operator's direct connection still works
    assert set(link.nodes()) == set(link.node_ids.values())


def test_supernodes_behind_the_gateway_run_a_federation(gated_link):
    link = gated_link
    db_url = f"sqlite:///{link.root / 'runs.db'}"
    counts = {site: write_site(link.root / f"{site}.npz", *cuts) for site, cuts in SITES.items()}
    procs = {}
    for site in SITES:
        cmd = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{link.gateway_port}",
               "--root-certificates", str(link.certs / "ca.crt"), "--host", "127.0.0.1", "--port", str(free_port()),
               "--auth-supernode-private-key", str(link.keys / site),
               "--node-config", f"data-path='{link.root / f'{site}.npz'}' modality='DX' body-part='CHEST'"]
        procs[site] = link.start(site, cmd)
    deadline = time.monotonic() + 90
    while set(link.nodes().values()) != {"online"}:
        assert time.monotonic() < deadline, f"SuperNodes behind the gateway never came online\n{link.tails()}"
        assert all(p.poll() is None for p in procs.values()), link.tails()
        time.sleep(0.5)
    run = link.start("flwr-run", [
        str(BIN / "flwr"), "run", ".", "secure", "--run-config",
        f"num-server-rounds=1 local-epochs=1 min-sites=2 db-url='{db_url}'", "--stream",
    ], cwd=ROOT)
    try:
        rc = run.wait(timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not finish through the gateway\n{link.tails()}")
    assert rc == 0, link.tails()
    (summary,) = RunStore(db_url).list_runs()
    assert summary["status"] == "completed", (summary, link.tails())
    (rnd,) = RunStore(db_url).get_run(summary["uuid"])["rounds"]
    assert (rnd["train_replies"], rnd["evaluate_replies"], rnd["failures"]) == (2, 2, 0), rnd
    assert rnd["metrics"]["evaluate.num-examples"] == sum(counts.values())
    access = (link.root / "gateway-access.log").read_text()
    for path in ("/v1/fleet/activate-node", "/v1/fleet/pull-messages", "/v1/fleet/push-messages"):
        assert f"POST {path} HTTP/1.1\" 200" in access, (path, access[-2000:])
    for p in procs.values():
        stop(p)
