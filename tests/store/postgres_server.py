"""A real, throwaway PostgreSQL server for the tests: ``initdb`` and ``postgres`` in a temporary
folder, from the binaries installed on the machine (Debian's ``postgresql-15``; ``.ci/run``
installs them when missing).

One server per test session (``postgres_server``), one fresh database per test
(``postgres_url``). PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user (or ``nobody``) through ``runuser``/``setpriv``, in a folder that user owns.
The server is a child of the test process and dies with it. It listens on
127.0.0.1 only, on a free port. ``fsync`` is off in this throwaway cluster only, to spare the
shared test machine's disk; the store itself still sets ``synchronous_commit = on`` on every
connection, as it does in production.

Where no binaries are found the tests that need them skip with a clear message, except under
CI (``CI`` set), where that is a failure: CI must never silently skip them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_binaries", "postgres_server", "postgres_url"]

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL 15 "
    "(Debian: apt-get install postgresql-15) to run the PostgreSQL tests; .ci/run does"
)


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One running cluster; ``database()`` makes a fresh empty database and returns its URL."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="matcher-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = _free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    self._user = name
                    os.chown(self.folder, entry.pw_uid, entry.pw_gid)
                    break
        self._names = itertools.count(1)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "matcher", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.url = f"postgresql://matcher@127.0.0.1:{self.port}/postgres"
        # The postmaster is a child of this process (not daemonised by pg_ctl) and gets SIGQUIT
        # (immediate shutdown) when this process dies, however it dies: a killed test run
        # leaves no server behind.
        server = [
            str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
            "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=300",
        ]  # fmt: skip
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            server = [
                "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                "--init-groups", "--pdeathsig=QUIT", *server,
            ]  # fmt: skip
            preexec = None
        else:
            preexec = _die_with_parent
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                server, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=preexec
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start:\n" + self.log.read_text()
                    ) from None
                time.sleep(0.1)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}\n{log}")

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://matcher@127.0.0.1:{self.port}/{name}"

    def drop(self, url: str) -> None:
        """Drop a database made by ``database`` (closing whatever is still connected)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def data_bytes(self) -> bytes:
        """Every file of the cluster's data folder (tables and WAL), as on disk."""
        out = []
        for path in sorted(self.data.rglob("*")):
            if path.is_file():
                with contextlib.suppress(OSError):
                    out.append(path.read_bytes())
        return b"".join(out)

    def stop(self) -> None:
        self._process.send_signal(signal.SIGQUIT)  # immediate shutdown
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGQUIT when the parent (the test run) dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGQUIT)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (skips, or fails under CI, without the binaries)."""
    bin_dir = find_binaries()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING + " (CI must run them)")
        pytest.skip(MISSING)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[dev]'")
    server = PostgresServer(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database on the session's server, dropped after the test. Its store key is a
    fresh keyring in ``MATCHER_STORE_KEY`` (a database has no folder to keep a key file
    beside), which every handle and every replica process of the test shares."""
    from matcher.store.crypto import KEY_ENV, Keyring

    monkeypatch.setenv(KEY_ENV, Keyring.generate().text())
    url = postgres_server.database()
    yield url
    postgres_server.drop(url)
