"""The rollout's manifests, as Kubernetes and Compose would read them, keep the threat model.

Kubernetes: the real ``kubectl kustomize`` renders ``deploy/k8s`` from a copy whose secret inputs
were made by the project's own scripts (``make-certs.sh``, ``make-node-keys.sh``, the bundle
``keygen``), so the test reads exactly what ``kubectl apply -k`` would send to a cluster.
Compose: the file is read as YAML. No container engine runs here; the live rollout (TLS,
node authentication, signed bundles) is exercised by tests/test_deployment_*.py with Flower's
own processes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SITES = ("site-a", "site-b", "site-c")
CONTROL_PORT = 9091  # the SuperLink's one port: Fleet and Control API


def _kustomize() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed")
    return kubectl


@pytest.fixture(scope="module")
def k8s(tmp_path_factory) -> list[dict]:
    kubectl = _kustomize()
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(DEPLOY / "k8s", root)
    subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), str(root / "certs"), "superlink",
                    "superlink.fedaegis.svc"], check=True, capture_output=True)
    subprocess.run(["bash", str(DEPLOY / "make-node-keys.sh"), str(root / "keys"), *SITES],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "fedaegis.orchestration.bundles", "keygen", str(root / "signing"),
                    "consortium"], check=True, capture_output=True)
    (root / "secrets").mkdir()
    (root / "secrets" / "db-password").write_text("0123456789abcdef0123456789abcdef")
    out = subprocess.run([kubectl, "kustomize", str(root)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def test_kubernetes_mounts_no_ca_key_and_each_site_only_its_own_key(k8s):
    secrets = _named(k8s, "Secret")
    assert not any("ca.key" in s.get("data", {}) for s in secrets.values()), "the CA's key is in a Secret"
    for site in SITES:
        (deploy,) = [d for n, d in _named(k8s, "Deployment").items() if n == f"supernode-{site}"]
        mounted = {v["secret"]["secretName"] for v in _pod(deploy)["volumes"] if "secret" in v}
        assert all(s.startswith(("superlink-ca", f"supernode-{site}-key")) for s in mounted), (site, mounted)
        args = _pod(deploy)["containers"][0]["args"]
        assert any(a.startswith("--trusted-entities=") for a in args), "a SuperNode runs unsigned bundles"
        assert "--superlink=fleet-gateway:9091" in " ".join(args), "a SuperNode reaches the Control API"


def test_kubernetes_keeps_the_control_api_to_the_consortium(k8s):
    policies = _named(k8s, "NetworkPolicy")
    guarding = [p for p in policies.values()
                if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "superlink"]
    assert guarding, "no NetworkPolicy selects the SuperLink"
    sources = {next(iter(f["podSelector"]["matchLabels"].values()))
               for p in guarding for rule in p["spec"]["ingress"] for f in rule["from"]}
    assert "supernode" not in sources and sources <= {"superexec-serverapp", "fleet-gateway", "operator"}, sources
    assert all(port["port"] == CONTROL_PORT for p in guarding for r in p["spec"]["ingress"] for port in r["ports"])


def test_kubernetes_gives_the_database_password_from_a_secret(k8s):
    serverapp = _pod(_named(k8s, "Deployment")["superexec-serverapp"])["containers"][0]
    env = {e["name"]: e for e in serverapp.get("env", [])}
    assert any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values()), env
    rendered = yaml.safe_dump_all(k8s)
    assert "0123456789abcdef0123456789abcdef" not in rendered.replace("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", ""), \
        "the database password appears in clear outside its Secret"
    assert not any("--run-config" in " ".join(map(str, c.get("args", []) + c.get("command", [])))
                   for d in _named(k8s, "Deployment").values() for c in _pod(d)["containers"])


def test_compose_mounts_no_ca_key_and_hospitals_reach_only_the_gateway():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            assert "ca.key" not in str(volume), f"{name} mounts the CA's key"
    on_hospitals = {n for n, s in services.items() if "hospitals" in s.get("networks", [])}
    assert "superlink" not in on_hospitals and "fleet-gateway" in on_hospitals
    assert all(n == "fleet-gateway" or n.startswith("supernode") for n in on_hospitals), on_hospitals
    published = [p for p in services["superlink"].get("ports", [])]
    assert all(str(p).startswith("${SUPERLINK_PUBLISH:-127.0.0.1:") for p in published), published
    for name, service in services.items():
        if name.startswith("supernode"):
            assert any(str(a).startswith("--trusted-entities") for a in service.get("command", [])), name
            keys = [v for v in service.get("volumes", []) if "/keys/" in str(v)]
            assert keys == [f"./keys/site-{name[-1]}:/keys/site-{name[-1]}:ro"], (name, keys)  # its own only
    serverapp = services["superexec-serverapp"]
    assert "${POSTGRES_PASSWORD}" in serverapp["environment"]["FEDAEGIS_DB_URL"]  # from the environment
    assert not any("run-config" in str(c) and "postgresql" in str(c) for s in services.values()
                   for c in s.get("command", []))
