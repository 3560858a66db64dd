"""A real, throwaway PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary
folder, from the binaries installed on the machine (Debian's ``postgresql-15``; ``.ci/run``
installs them when missing).

One server per test session (``postgres_server``), one fresh database per test
(``postgres_url``). PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user (or ``nobody``) through ``runuser``, in a folder that user owns. It listens on
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
import socket
import subprocess
import tempfile
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
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}"
            " -c fsync=off -c full_page_writes=off -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")
        self.url = f"postgresql://matcher@127.0.0.1:{self.port}/postgres"

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
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


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
