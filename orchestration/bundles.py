"""Signed app bundles: a hospital's SuperNode runs only code the consortium signed.

Whoever reaches a SuperLink's Control API can start a run, and every SuperNode runs
the ClientApp named by the run's bundle (FAB). ``flower-supernode --trusted-entities``
makes a SuperNode run a bundle only if it carries a valid Ed25519 signature by a
listed key; in Flower 1.41 a SuperLink attaches signatures only to bundles it fetches
from an app registry (``flwr run @account/app==x.y.z``), at ``$FLWR_SUPERGRID_API_URL``.
A bundle sent with ``flwr run .`` carries none and is refused at every hospital.

This module is that chain, offline: ``sign`` (the consortium's release manager, who
alone holds the Ed25519 key) signs a FAB the way Flower verifies it (timestamp and
SHA-256 of the bundle); ``serve`` is the consortium's registry of signed bundles for
its SuperLink; ``keygen`` makes the key and the ``--trusted-entities`` file for sites.
Flower's own primitives do the cryptography (``flwr.supercore.primitives.asymmetric_ed25519``).

    python -m fedaegis.orchestration.bundles keygen KEYDIR consortium
    python -m fedaegis.orchestration.bundles sign APP.fab KEYDIR/consortium REGISTRY --app @fedaegis/fedaegis
    python -m fedaegis.orchestration.bundles serve REGISTRY --port 8470
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from flwr.supercore.primitives.asymmetric_ed25519 import (
    create_message_to_sign,
    generate_key_pair,
    load_private_key,
    sign_message,
)

from ..shared.run.paths import private_dir, write_private

_APP_ID = re.compile(r"^@[A-Za-z0-9_-]+/[A-Za-z0-9_-]+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def keygen(folder: Path, name: str) -> Path:
    """``folder/name`` (Ed25519, OpenSSH, owner-only), ``name.pub`` and ``trusted-entities.yaml``."""
    private_dir(folder)
    if (folder / name).exists():
        raise FileExistsError(f"{folder / name} exists; a signing key is never overwritten")
    sk, pk = generate_key_pair()
    write_private(folder / name, sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
    pub = pk.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    (folder / f"{name}.pub").write_text(pub + "\n")
    (folder / "trusted-entities.yaml").write_text(f"{name}: \"{pub}\"\n")
    return folder / name


def sign(fab: Path, key: Path, registry: Path, app_id: str, version: str, key_id: str | None = None) -> Path:
    """Put ``fab`` into ``registry`` as ``app_id==version`` with its signature by ``key``."""
    if not _APP_ID.match(app_id) or not _VERSION.match(version):
        raise ValueError(f"app {app_id!r} version {version!r}: expected @account/app and x.y.z")
    content = fab.read_bytes()
    signed_at = int(time.time())
    signature = sign_message(load_private_key(key), create_message_to_sign(hashlib.sha256(content).digest(), signed_at))
    folder = private_dir(registry / app_id.lstrip("@"))
    (folder / f"{version}.fab").write_bytes(content)
    (folder / f"{version}.json").write_text(json.dumps({
        "public_key_id": key_id or key.name,
        "signature": base64.urlsafe_b64encode(signature).decode().rstrip("="),
        "signed_at": signed_at,
    }))
    return folder / f"{version}.fab"


def _handler(registry: Path) -> type[BaseHTTPRequestHandler]:
    class Registry(BaseHTTPRequestHandler):
        """Flower's ``/hub/fetch-fab`` (bundle link and signatures) and the bundles themselves."""

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path.rstrip("/") != "/hub/fetch-fab":
                return self._send(404, {"detail": "not found"})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            app_id, version = str(body.get("app_id", "")), body.get("app_version")
            folder = registry / app_id.lstrip("@")
            if not _APP_ID.match(app_id) or not folder.is_dir():
                return self._send(404, {"detail": f"{app_id} not found"})
            versions = sorted((p.stem for p in folder.glob("*.fab")), key=lambda v: tuple(map(int, v.split("."))))
            version = version or (versions[-1] if versions else None)
            if version not in versions:
                return self._send(404, {"detail": {"available_app_versions": versions}})
            host, port = self.server.server_address[:2]
            self._send(200, {"fab_url": f"http://{host}:{port}/fab/{app_id.lstrip('@')}/{version}",
                             "verifications": [json.loads((folder / f"{version}.json").read_text())]})

        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "fab" or not _VERSION.match(parts[3]):
                return self._send(404, {"detail": "not found"})
            fab = registry / parts[1] / parts[2] / f"{parts[3]}.fab"
            if not _APP_ID.match(f"@{parts[1]}/{parts[2]}") or not fab.is_file():
                return self._send(404, {"detail": "not found"})
            data = fab.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            print("registry:", fmt % args, flush=True)

    return Registry


def serve(registry: Path, host: str = "127.0.0.1", port: int = 8470) -> None:
    """Serve ``registry`` to the consortium's SuperLink (``FLWR_SUPERGRID_API_URL=http://HOST:PORT``)."""
    ThreadingHTTPServer((host, port), _handler(registry)).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fedaegis.orchestration.bundles", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="the consortium's Ed25519 signing key and trusted-entities.yaml")
    k.add_argument("folder", type=Path)
    k.add_argument("name")
    s = sub.add_parser("sign", help="sign a FAB (from `flwr build`) into the registry")
    s.add_argument("fab", type=Path)
    s.add_argument("key", type=Path)
    s.add_argument("registry", type=Path)
    s.add_argument("--app", required=True, help="@account/app, as in `flwr run @account/app==x.y.z`")
    s.add_argument("--version", required=True, help="x.y.z")
    s.add_argument("--key-id", help="the key's name in the sites' trusted-entities.yaml (default: the key file's name)")
    v = sub.add_parser("serve", help="serve the registry to the SuperLink")
    v.add_argument("registry", type=Path)
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8470)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        print(keygen(args.folder, args.name))
    elif args.command == "sign":
        print(sign(args.fab, args.key, args.registry, args.app, args.version, args.key_id))
    else:
        serve(args.registry, args.host, args.port)


if __name__ == "__main__":
    main()
