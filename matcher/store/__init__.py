"""The durable store: the source of truth behind the in-memory index.

``open_store(url_or_path)`` opens a backend by URL: a folder path (or ``sqlite:///abs/path``)
is the embedded SQLite default; ``postgresql://...`` is the PostgreSQL store that several
replicas share (``matcher.store.postgres``, loaded only when asked for). The
protocols every backend implements are in ``matcher.store.base``; the values they return are
those of ``matcher.records``.
"""

from __future__ import annotations

import os

from matcher.errors import InvalidInput
from matcher.store.base import (
    AccountStore,
    AddedItems,
    AllowlistStore,
    AuditReader,
    CaseStore,
    ChangeFeed,
    MatchStore,
    Snapshot,
    Store,
)
from matcher.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_POOL_SIZE",
    "AccountStore",
    "AddedItems",
    "AllowlistStore",
    "AuditReader",
    "CaseStore",
    "ChangeFeed",
    "MatchStore",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "open_store",
]

DEFAULT_DATA_DIR = "./matcher-data"
"""Where ``--data`` points when it is not given (and what ``--store`` defaults to)."""

_SQLITE = "sqlite://"
_POSTGRES = ("postgresql://", "postgres://")


DEFAULT_POOL_SIZE = 10
"""Most connections one process opens to a PostgreSQL store (``--pool-size``): the replica's
threads that call the store at once (its thread pool, the follower, the match path's store
check) rarely need more; N replicas need N times this below the server's max_connections."""


def open_store(
    url: str | os.PathLike[str] = DEFAULT_DATA_DIR,
    *,
    key_file: str | os.PathLike[str] | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    ledger: str | os.PathLike[str] | None = None,
) -> Store:
    """Open (creating and migrating if needed) the store that ``url`` names.

    A path, or ``sqlite:///abs/path/to/folder``, is the SQLite store in that folder;
    ``postgresql://user@host:port/db`` (or ``postgres://``) is the PostgreSQL store in that
    database (``pip install 'matcher[postgres]'``); any other scheme is ``InvalidInput``.
    ``key_file`` is where the store key is (see ``matcher.store.crypto``: ``MATCHER_STORE_KEY``
    wins; default ``MATCHER_KEY_FILE``, else ``<folder>.key`` beside a SQLite folder).
    ``pool_size`` is the most connections to a PostgreSQL store (SQLite has no pool).
    ``ledger`` is the withdrawal ledger file (``matcher.store.ledger``): on PostgreSQL one per
    replica, none when not given; on SQLite it replaces ``withdrawals.jsonl`` in the folder.

    >>> open_store("mysql://db/matcher")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    matcher.errors.InvalidInput: unknown store URL scheme 'mysql' (use a folder path, ...)
    """
    text = os.fspath(url)
    if text.startswith(_POSTGRES):
        try:
            from matcher.store.postgres import PostgresStore
        except ImportError as exc:
            raise InvalidInput(str(exc), field="store") from None
        return PostgresStore(text, key_file=key_file, max_connections=pool_size, ledger=ledger)
    if text.startswith(_SQLITE):
        folder = text[len(_SQLITE) :]
        if not folder:
            raise InvalidInput("a sqlite:// store URL needs a folder path", field="store")
        return SQLiteStore(folder, key_file=key_file, ledger=ledger)
    if "://" in text:
        scheme = text.partition("://")[0]
        raise InvalidInput(
            f"unknown store URL scheme {scheme!r} (use a folder path, sqlite:// or postgresql://)",
            field="store",
        )
    return SQLiteStore(text, key_file=key_file, ledger=ledger)
