"""The backends the store conformance suite runs against: one fixture, one parameter each.

A backend here is a real store (a real SQLite file in a fresh folder; later a real PostgreSQL
database) plus the two things only its harness knows: how to open a second handle on the same
data (another process, another replica) and how to read its raw files, to check that
withdrawn values are really gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from matcher.store import SQLiteStore, Store


@dataclass
class Backend:
    """A store under test and its harness."""

    name: str
    open: Callable[[], Store]
    raw_bytes: Callable[[], bytes]
    opened: list[Store] = field(default_factory=list)

    def store(self) -> Store:
        """Another handle on the same data (closed at the end of the test)."""
        handle = self.open()
        self.opened.append(handle)
        return handle


def _sqlite(folder: Path) -> Backend:
    def raw_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())

    return Backend("sqlite", lambda: SQLiteStore(folder), raw_bytes)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        pytest.skip("the PostgreSQL store arrives with the replicas issue")
    made = _sqlite(tmp_path / "data")
    yield made
    for handle in made.opened:
        handle.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store()
