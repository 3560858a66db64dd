"""The backends the store conformance suite runs against: one fixture, one parameter each.

A backend here is a real store (a real SQLite file in a fresh folder; a fresh database on a
real PostgreSQL server, ``tests.store.postgres_server``) plus what only its harness knows: how
to open a second handle on the same data (another process, another replica), how to read its
raw bytes, and (for a backend that seals values at rest) where an item's sealed blob is, to
check that no value is ever in its files and that withdrawn blobs are really gone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from matcher.store import SQLiteStore, Store
from matcher.store.sqlite import DB_FILENAME

__all__ = ["Backend", "backend", "store"]


@dataclass
class Backend:
    """A store under test and its harness."""

    name: str
    open: Callable[[], Store]
    raw_bytes: Callable[[], bytes]
    sealed: Callable[[int], bytes] | None
    """The sealed blob of an item's codes as the backend stores it (to look for it in files);
    None for a backend that does not seal values (every backend here does)."""
    opened: list[Store] = field(default_factory=list)

    def store(self) -> Store:
        """Another handle on the same data (closed at the end of the test)."""
        handle = self.open()
        self.opened.append(handle)
        return handle


def _sqlite(folder: Path) -> Backend:
    def raw_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())

    def sealed(item_id: int) -> bytes:
        conn = sqlite3.connect(folder / DB_FILENAME)
        try:
            row = conn.execute("SELECT sealed FROM item_codes WHERE item_id = ?", (item_id,))
            return bytes(row.fetchone()[0])
        finally:
            conn.close()

    return Backend("sqlite", lambda: SQLiteStore(folder), raw_bytes, sealed)


def _postgres(url: str) -> Backend:
    """PostgreSQL's "raw bytes" are every row of every table of the database, read with COPY
    in binary: what anyone with database access (or a dump, a replica, a backup made from
    SQL) can see. Not the cluster's files: PostgreSQL has no secure_delete, so a deleted
    row's bytes may linger in a page's free space or an old WAL segment until overwritten
    (``matcher.store.postgres``, "Withdrawal"; encryption at rest is the answer there)."""
    import psycopg

    from matcher.store.postgres import PostgresStore

    def raw_bytes() -> bytes:
        out = bytearray()
        with psycopg.connect(url, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
            for (table,) in tables:
                with conn.cursor() as cur, cur.copy(f"COPY {table} TO STDOUT (FORMAT binary)") as c:
                    for block in c:
                        out += block
        return bytes(out)

    def sealed(item_id: int) -> bytes:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT sealed FROM item_codes WHERE item_id = %s", (item_id,)
            ).fetchone()
        assert row is not None
        return bytes(row[0])

    return Backend("postgres", lambda: PostgresStore(url), raw_bytes, sealed)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        made = _postgres(request.getfixturevalue("postgres_url"))
    else:
        made = _sqlite(tmp_path / "data")
    yield made
    for handle in made.opened:
        handle.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store()
