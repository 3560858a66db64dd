"""The durable store: the source of truth behind the in-memory index.

``open_store(data_dir)`` opens the embedded SQLite default; the ``Store`` protocol in
``matcher.store.base`` is what every backend (SQLite now, PostgreSQL later) implements.
"""

from __future__ import annotations

import os

from matcher.store.base import (
    AddedHashes,
    ApiKeyRecord,
    AuditEntry,
    CaseRecord,
    CaseState,
    Change,
    CodeChunk,
    Organisation,
    Snapshot,
    Store,
)
from matcher.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_DATA_DIR",
    "AddedHashes",
    "ApiKeyRecord",
    "AuditEntry",
    "CaseRecord",
    "CaseState",
    "Change",
    "CodeChunk",
    "Organisation",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "open_store",
]

DEFAULT_DATA_DIR = "./matcher-data"
"""Where ``--data`` points when it is not given."""


def open_store(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> SQLiteStore:
    """Open (creating and migrating if needed) the SQLite store in ``data_dir``."""
    return SQLiteStore(data_dir)
