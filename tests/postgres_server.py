"""A throwaway PostgreSQL server from Debian's ``postgresql`` package, for tests.

The server is a real ``postgres`` process on 127.0.0.1 (a free port) with its socket and data
in a temporary folder, so tests exercise the psycopg driver and PostgreSQL's SQL, not SQLite's.
PostgreSQL refuses to run as root: as root, it runs as the ``postgres`` user the Debian package
creates (or ``nobody``), with the data folder handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD, DATABASE = "fedaegis", "s3cret-pw", "fedaegis"


def find_bindir() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/N/bin`` holding initdb and postgres."""
    dirs = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    dirs = [d for d in dirs if (d / "postgres").is_file()]
    if dirs:
        return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("postgres") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, but neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown of our postmaster (by its PID), then remove its folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(bindir: Path, timeout: float = 60.0) -> PostgresServer:
    """initdb into a fresh folder, start ``postgres`` on 127.0.0.1 and create the test database."""
    import psycopg

    user = _run_as()
    # Not pytest's tmp_path: its parents are private to root, and postgres runs as another user.
    root = Path(tempfile.mkdtemp(prefix="fedaegis-pg-"))
    (root / "sock").mkdir()
    (root / "pw").write_text(PASSWORD + "\n")
    ids: dict[str, object] = {}
    if user is not None:
        for path in (root, root / "sock", root / "pw"):
            os.chown(path, user.pw_uid, user.pw_gid)
        ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(root)}
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER, f"--pwfile={root / 'pw'}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"],
        check=True, capture_output=True, env=env, cwd=root, **ids,  # type: ignore[arg-type]
    )
    port = _free_port()
    with open(root / "postgres.log", "wb") as log:  # the server keeps its own copy of the fd
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root / 'sock'}",
             "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, **ids,  # type: ignore[arg-type]
        )
    server = PostgresServer(bindir, root, port, process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres",
                autocommit=True, connect_timeout=5,
            ) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{server.log()}") from None
            time.sleep(0.2)
