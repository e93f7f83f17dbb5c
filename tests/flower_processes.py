"""Start and stop real Flower processes in tests: ports, process trees, environments.

Servers bind 127.0.0.1 on free ports and every process a test starts is stopped
by PID, with all it started (SuperExec, ServerApp, ClientApps, Ray).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

# one home for free ports and process trees: the Simulation Runtime's own helpers
from fedaegis.orchestration.runtime import _parents, free_port, process_tree, stop_tree  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: flwr, flower-superlink, flower-supernode


def pids_with_args(program: str, marker: str) -> list[int]:
    """PIDs whose command line runs ``program`` with an argument containing ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(Path(a).name == program for a in argv[:2]) and any(marker in a for a in argv):
            found.append(int(cmdline.parent.name))
    return found


def assert_no_legacy_federations() -> None:
    """`flwr run` 1.41 would "migrate" [tool.flwr.federations] by rewriting pyproject.toml."""
    flwr_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    assert "federations" not in flwr_cfg, (
        "pyproject.toml has [tool.flwr.federations]: Flower 1.41 keeps SuperLink connections in "
        "$FLWR_HOME/config.toml, and `flwr run` would rewrite pyproject.toml (see deploy/README.md)"
    )


def flower_env(state: Path, ray_tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(state / "flwr"),
        "FEDAEGIS_HOME": str(state / "home"),
        "RAY_TMPDIR": str(ray_tmp),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FEDAEGIS_DB_URL", None)
    return env


def stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop a process we started, with its descendants, and reap it."""
    if proc.poll() is None:
        stop_tree(proc.pid, grace_s)
    proc.wait(timeout=5)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and its descendants at once, like a crashed machine; returns the PIDs."""
    pids = process_tree(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60,
                 cafile: Path | None = None) -> None:
    """Wait for ``url`` (a SuperLink's /health) to answer 200; HTTPS verified against ``cafile``."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not healthy after {timeout_s}s:\n{log.read_text()[-3000:]}")
