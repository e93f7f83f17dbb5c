"""Flower's supported Simulation Runtime, driven from Python: one private SuperLink per run.

Flower 1.41 deprecates ``flwr.simulation.run_simulation``; its supported path is ``flwr run``
against a SuperLink started with ``--simulation``, whose SuperExec launches ``flwr-simulation``
(the ServerApp in a thread, the ClientApps on a pool of Ray actors). ``flwr run`` itself would
start one shared SuperLink on fixed ports (39091/39093) and leave it running; fedaegis instead
starts its own for each run, on a free port of 127.0.0.1 with its own ``FLWR_HOME``, submits
the app to it with ``flwr run``, follows the run's log stream, and stops that SuperLink and
everything it started by PID when the run ends: also on failure and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

BIN = Path(sys.executable).parent  # the environment's flwr, flower-superlink, flwr-simulation
CONNECTION = "fedaegis"  # the connection name written to the private FLWR_HOME's config.toml
STARTUP_TIMEOUT_S = 60.0


class RuntimeFailure(RuntimeError):
    """The Simulation Runtime could not run the app (the message holds the log's tail)."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parents() -> dict[int, int]:
    """pid -> ppid of every live (non-zombie) process, from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            out[int(stat.parent.name)] = int(fields[1])
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (SuperExec, flwr-simulation, Ray, ...)."""
    parents = _parents()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in parents and p not in tree:
            tree.append(p)
            todo += [c for c, pp in parents.items() if pp == p]
    return tree


def stop_tree(pid: int, grace_s: float = 15.0) -> None:
    """SIGTERM ``pid`` and its descendants (collected first), then SIGKILL what is left."""
    pids = process_tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p in _parents() for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if p in _parents()]
        if not pids:
            return


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the process that started it dies, even by SIGKILL.

    SuperExec and flwr-simulation watch their own parent (``--parent-pid``), so the chain holds.
    """
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def write_app(folder: Path, components: Mapping[str, str], config: Mapping[str, Any]) -> Path:
    """A minimal Flower App in ``folder``: only a ``pyproject.toml`` naming the components.

    The components are imported from the installed fedaegis (or any importable module), so
    the app bundle holds nothing else; ``config`` becomes its run config.
    """
    from ..shared.run.config import toml_key

    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]", 'requires = ["setuptools>=69"]', 'build-backend = "setuptools.build_meta"', "",
        "[project]", 'name = "fedaegis-app"', 'version = "0.1.0"', 'description = "fedaegis run"',
        'license = "Apache-2.0"', "dependencies = []", "",
        "[tool.flwr.app]", 'publisher = "fedaegis"', "",
        "[tool.flwr.app.components]", *(f"{k} = {_toml_value(v)}" for k, v in components.items()), "",
        "[tool.flwr.app.config]", *(f"{toml_key(k)} = {_toml_value(v)}" for k, v in config.items()), "",
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines))
    return folder


class ManagedSuperLink:
    """A SuperLink in simulation mode on a free port, stopped with all it started on exit.

    ``env`` is the environment of the SuperLink, and so of the SuperExec, ``flwr-simulation``
    and the Ray workers it starts (Ray address, threads, PYTHONPATH, ...).
    """

    def __init__(self, state: Path, env: Mapping[str, str]) -> None:
        self.state = state
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        path = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the SuperLink starts flower-superexec by name
        self.env = {**env, "FLWR_HOME": str(state / "flwr"), "PATH": path}
        self.log_file = state / "superlink.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ManagedSuperLink:
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\ninsecure = true\n'
        )
        cmd = [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
               "--port", str(self.port), "--database", str(self.state / "state.db"),
               "--disable-runtime-dependency-installation"]
        with self.log_file.open("wb") as log:
            # its own session: a Ctrl-C at the terminal reaches us, and we stop it in order
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeFailure(f"flower-superlink exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeFailure(f"flower-superlink on {self.address} not ready after {STARTUP_TIMEOUT_S:.0f}s")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the SuperLink and its descendants by PID (SIGTERM, then SIGKILL), and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            stop_tree(self.proc.pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def run(self, app: Path, federation_config: Mapping[str, Any], on_line: Callable[[str], None],
            succeeded: Callable[[int], bool] = lambda run_id: False,
            ends: Callable[[str], bool] = lambda line: False,
            failed: Callable[[int], str | None] = lambda run_id: None) -> int:
        """Submit ``app`` with ``flwr run`` and follow its logs to the end; Flower's run id.

        Every log line goes to ``on_line``. Raises :class:`RuntimeFailure` when the run could
        not be submitted or Flower reports it failed; ``succeeded`` (the app's own record of
        the run) spares asking Flower (``flwr ls``, seconds) when it already says so. A line for
        which ``ends`` holds (the app saying its run is over) ends the following there when the
        app's record confirms it, ``succeeded`` or ``failed`` (the stored error, or None): Flower's
        own wind-down (stopping Ray, reporting the status, closing the stream: seconds) is left
        to :meth:`stop`, which ends it all by PID anyway.
        """
        fed = " ".join(f"{k}={_toml_value(v)}" for k, v in federation_config.items())
        cmd = [str(BIN / "flwr"), "run", str(app), CONNECTION, "--federation-config", fed, "--stream"]
        proc = subprocess.Popen(cmd, env={**self.env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
        run_id, tail = None, []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = (tail + [line])[-40:]
                if run_id is None and "Successfully started run" in line:
                    run_id = int(line.rsplit(" ", 1)[-1])
                on_line(line)
                if run_id is not None and ends(line):
                    if succeeded(run_id):
                        return run_id
                    error = failed(run_id)
                    if error is not None:
                        raise RuntimeFailure(f"Flower run {run_id} failed, as the app stored it: {error}")
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                stop_tree(proc.pid)
                proc.wait()
        if rc != 0 or run_id is None:
            raise RuntimeFailure(f"flwr run exited with {rc}: " + "\n".join(tail[-15:]))
        if not succeeded(run_id):
            status = self.run_status(run_id)
            if status.get("status") != "finished:completed":
                raise RuntimeFailure(f"Flower run {run_id} ended {status.get('status', '?')}: "
                                     + "\n".join(tail[-15:]))
        return run_id

    def run_status(self, run_id: int) -> dict[str, Any]:
        """Flower's record of a run (``flwr ls --run-id``), e.g. ``{"status": "finished:completed"}``."""
        res = subprocess.run([str(BIN / "flwr"), "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
                             env=self.env, capture_output=True, text=True, timeout=60)
        try:
            runs = json.loads(res.stdout).get("runs", [])
        except json.JSONDecodeError:
            return {}
        return runs[0] if runs else {}


def export_app(folder: Path) -> Path:
    """fedaegis as a minimal Flower App in ``folder``, for ``flwr run`` from an installed copy."""
    from ..shared.run.config import RunConfig

    return write_app(folder, {"serverapp": "fedaegis.server.app:app", "clientapp": "fedaegis.client.app:app"},
                     RunConfig().to_flower())


def flwr_app(folder: Path) -> None:
    """Write fedaegis as a Flower App (one pyproject.toml) for ``flwr run FOLDER``: an installed copy
    has no pyproject.toml of its own to submit."""
    from rich.console import Console

    path = export_app(folder) / "pyproject.toml"
    Console(stderr=True).print(f"wrote {path}: submit it with `flwr run {folder} CONNECTION`")


def register(app: Any) -> None:
    """Add ``flwr-app FOLDER`` to the CLI (a second call is a no-op)."""
    if not any(c.name == "flwr-app" for c in app.registered_commands):
        app.command("flwr-app")(flwr_app)
