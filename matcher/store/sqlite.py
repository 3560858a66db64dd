"""The embedded store: one SQLite file in the data folder, WAL mode, ``synchronous=FULL``.

Why these settings:

- **WAL** lets readers (the match path's store check, start-up loading) run while a write
  commits, each reader seeing one committed snapshot.
- **synchronous=FULL** fsyncs the WAL at every commit, so a commit that returned survives a
  crash or power cut (in WAL mode, NORMAL may lose the last commits on power loss). That is
  what "acknowledged means committed" needs.
- **secure_delete** overwrites deleted rows with zeros, and after a withdrawal the WAL is
  checkpointed and truncated, so a withdrawn hash value does not linger in free pages or old
  WAL frames of the files we control (what the file system or disk keep is outside our reach).

Concurrency: SQLite has one writer at a time, so all writes go through one connection under a
lock (no ``SQLITE_BUSY`` between our own threads), each in a ``BEGIN IMMEDIATE`` transaction.
Reads use one connection per thread (a ``sqlite3.Connection`` must not be used by two threads at
once); each read is its own short transaction, so it sees everything committed before it began.

Schema (version 1; ``_MIGRATIONS`` holds every version from the first release on)::

    schema_version(version PK, applied_at)
    meta(key PK, value)                         match-id key
    organisations(id PK, name UNIQUE, created_at)
    cases(id PK, number UNIQUE, org_id -> organisations, state, secret_hash,
          hash_count, reported_correct, reported_wrong, created_at, withdrawn_at)
    hashes(id PK AUTOINCREMENT, case_id -> cases, signal, value, quality, created_at)
    signal_counts(signal PK, hashes)            kept in the same transactions as hashes
    changes(seq PK AUTOINCREMENT, op 'add'|'remove', first_id, last_id, at)  no values
    feedback(id PK, case_id -> cases, correct, actor, org_id, at)
    audit(id PK, at, actor, org_id, action, case_id, detail JSON)         no values
    api_keys(id PK, name, role, org_id -> organisations, key_hash UNIQUE, prefix,
             created_at, revoked_at)

Times are integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from matcher.errors import Conflict, NotFound, Unavailable
from matcher.principal import Principal, Role
from matcher.signals import SIGNALS, Hash
from matcher.store.base import (
    AddedHashes,
    ApiKeyRecord,
    AuditEntry,
    CaseRecord,
    CaseState,
    Change,
    CodeChunk,
    Organisation,
)

__all__ = ["DB_FILENAME", "SCHEMA_VERSION", "SQLiteSnapshot", "SQLiteStore"]

DB_FILENAME = "matcher.db"

# Each entry is one schema version: the statements that take the previous version to it. Never
# edit a released entry; append a new one. Each version is applied in its own transaction
# (SQLite DDL is transactional), so a crash mid-migration leaves the previous version intact.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value BLOB NOT NULL
        )""",
        """CREATE TABLE organisations (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL
        )""",
        """CREATE TABLE cases (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL UNIQUE,
            org_id INTEGER NOT NULL REFERENCES organisations(id),
            state TEXT NOT NULL CHECK (state IN ('active', 'withdrawn')),
            secret_hash TEXT NOT NULL,
            hash_count INTEGER NOT NULL DEFAULT 0,
            reported_correct INTEGER NOT NULL DEFAULT 0,
            reported_wrong INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            withdrawn_at INTEGER
        )""",
        "CREATE INDEX cases_by_org ON cases(org_id)",
        # AUTOINCREMENT: ids are never reused, even after the highest rows are deleted, so a
        # stale index (a lagging replica) can never find a new, unrelated hash behind an old id.
        """CREATE TABLE hashes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            signal TEXT NOT NULL,
            value BLOB NOT NULL,
            quality INTEGER,
            created_at INTEGER NOT NULL
        )""",
        "CREATE INDEX hashes_by_case ON hashes(case_id)",
        # Per-signal totals, updated in the same transactions as the hashes: statistics and
        # start-up (progress total, exact preallocation) without a scan of 10M rows.
        """CREATE TABLE signal_counts (
            signal TEXT PRIMARY KEY,
            hashes INTEGER NOT NULL
        ) WITHOUT ROWID""",
        # One row per run of consecutive hash ids, not per hash: an enrollment's ids are one
        # block, so 10M hashes enrolled 10k at a time take 1k rows here instead of 10M
        # (~270 MB). Ids never get reused, so a range never covers another case's hashes.
        """CREATE TABLE changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
            first_id INTEGER NOT NULL,
            last_id INTEGER NOT NULL CHECK (last_id >= first_id),
            at INTEGER NOT NULL
        )""",
        """CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
            actor TEXT NOT NULL,
            org_id INTEGER,
            at INTEGER NOT NULL
        )""",
        "CREATE INDEX feedback_by_case ON feedback(case_id)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            org_id INTEGER,
            action TEXT NOT NULL,
            case_id INTEGER,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_by_case ON audit(case_id)",
        """CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('partner', 'practitioner', 'admin')),
            org_id INTEGER REFERENCES organisations(id),
            key_hash BLOB NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        )""",
    ),
]

SCHEMA_VERSION = len(_MIGRATIONS)

# A last guard for rule 2: audit details are built by the bank from counts and names; anything
# that looks like a hash (a long run of hex digits) is refused before it reaches the table.
_HEXISH = re.compile(r"[0-9a-fA-F]{16,}")
_CHUNK_ROWS = 1 << 16


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _dt_required(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _check_detail(detail: dict[str, object]) -> str:
    for key, value in detail.items():
        if not isinstance(value, int | str) or (isinstance(value, str) and len(value) > 100):
            raise ValueError(f"audit detail {key!r} must be a count or a short name")
        if isinstance(value, str) and _HEXISH.search(value):
            raise ValueError(f"audit detail {key!r} looks like a hash value")
    return json.dumps(detail, sort_keys=True)


_CASE_COLUMNS = (
    "id, number, org_id, state, secret_hash, hash_count, reported_correct, reported_wrong, "
    "created_at, withdrawn_at"
)
_KEY_COLUMNS = "id, name, role, org_id, prefix, created_at, revoked_at"


def _case(row: tuple) -> CaseRecord:
    return CaseRecord(
        id=row[0],
        number=row[1],
        org_id=row[2],
        state=CaseState(row[3]),
        secret_hash=row[4],
        hash_count=row[5],
        reported_correct=row[6],
        reported_wrong=row[7],
        created_at=_dt_required(row[8]),
        withdrawn_at=_dt(row[9]),
    )


def _key(row: tuple) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0],
        name=row[1],
        role=Role(row[2]),
        org_id=row[3],
        prefix=row[4],
        created_at=_dt_required(row[5]),
        revoked_at=_dt(row[6]),
    )


def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of consecutive values in sorted ``ids``: [1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _json_ids(ids: Sequence[int]) -> str:
    # One JSON array parameter instead of thousands of "?" placeholders: SQLite's json_each
    # turns it back into rows, and the statement text stays the same (cached) for any size.
    return json.dumps([int(i) for i in ids])


# One block of the start-up scan, as three aggregates over the same rows: every row feeds all
# three in the same step, so the i-th id and the i-th code always belong together whatever
# order SQLite feeds them in. group_concat joins the blob values in C (text_factory=bytes
# keeps them raw, and their lengths keep embedded zero bytes), which is about four times
# faster than fetching a Python tuple per row. Lengths are checked below, not trusted.
_BLOCK_SQL = (
    "SELECT count(*), max(id), group_concat(id), group_concat(value, '') FROM ("
    "SELECT id, value FROM hashes WHERE signal = ? AND id > ? ORDER BY id LIMIT ?)"
)


@dataclass
class SQLiteSnapshot:
    """A consistent read of every hash row (see ``Snapshot`` in ``matcher.store.base``)."""

    mark: int
    counts: dict[str, int]
    _conn: sqlite3.Connection

    @property
    def total(self) -> int:
        """Number of hashes in the snapshot."""
        return sum(self.counts.values())

    def chunks(self, rows: int = _CHUNK_ROWS) -> Iterator[CodeChunk]:
        """Yield every stored hash, one signal type after another, each in id order."""
        for name in self.counts:
            width = SIGNALS[name].byte_length
            last = 0
            while True:
                n, top, ids, values = self._conn.execute(_BLOCK_SQL, (name, last, rows)).fetchone()
                if not n:
                    break
                id_arr = np.fromstring(ids, dtype=np.int64, sep=",")
                if len(id_arr) != n or len(values) != n * width:
                    raise RuntimeError("the store returned a malformed block of hashes")
                codes = np.frombuffer(values, dtype=np.uint8).reshape(n, width)
                yield CodeChunk(name, id_arr, codes)
                last = top


class SQLiteStore:
    """The SQLite store (see the module docstring). Safe to share between threads.

    >>> import tempfile
    >>> with SQLiteStore(tempfile.mkdtemp()) as store:
    ...     store.schema_version
    1
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        _migrations: list[tuple[str, ...]] | None = None,
    ) -> None:
        """Open (creating and migrating if needed) the store in ``data_dir``.

        ``busy_timeout`` is how many seconds a write waits for another process's write lock
        before giving up with ``Unavailable``.
        """
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self._migrations = _MIGRATIONS if _migrations is None else _migrations
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._purge_timer: threading.Timer | None = None
        try:
            # The folder holds sensitive hashes: readable by the owner only.
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._writer = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise Unavailable(f"cannot open the store in {self.data_dir}: {exc}") from exc
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._migrate()
            self._match_key = self._ensure_match_key()
        except BaseException:
            self._writer.close()
            raise

    # -- connections and transactions

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so every transaction boundary
        # is visible in this file. check_same_thread=False: the writer is shared under a lock
        # and close() may run on another thread.
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout,
        )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise Unavailable("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: commits on success, rolls back on any exception.

        Nothing is acknowledged unless COMMIT returned. A database that is locked by another
        process for longer than the busy timeout, or that fails to write (disk full, I/O
        error), raises ``Unavailable``: the caller may retry.
        """
        with self._write_lock:
            if self._closed:
                raise Unavailable("the store is closed")
            conn = self._writer
            try:
                # IMMEDIATE takes the write lock now, so another process writing to the same
                # file makes us wait (busy timeout) here rather than fail halfway through.
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise Unavailable("the store is busy; retry later") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # A failed COMMIT can leave the transaction open: roll it back, so that it is
                # not committed later by accident with the next transaction's COMMIT.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise Unavailable("the store failed to write; retry later") from exc
                raise

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close every connection."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._purge_timer is not None:
                self._purge_timer.cancel()
            # A reader still open elsewhere may refuse the checkpoint; the WAL is then
            # replayed on the next open, so nothing is lost.
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema

    @property
    def schema_version(self) -> int:
        """The schema version of the database file."""
        row = self._reader().execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        conn = self._writer
        with self._write_lock:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            )
            current = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        if current > len(self._migrations):
            raise Unavailable(
                f"the data folder has schema version {current}, newer than this matcher "
                f"({len(self._migrations)}): upgrade matcher"
            )
        for version in range(current + 1, len(self._migrations) + 1):
            with self._write() as w:
                # Re-check inside the transaction: another process may have migrated meanwhile.
                done = w.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,))
                if done.fetchone():
                    continue
                for statement in self._migrations[version - 1]:
                    w.execute(statement)
                w.execute("INSERT INTO schema_version VALUES (?, ?)", (version, _now_ms()))

    def _ensure_match_key(self) -> bytes:
        with self._write() as w:
            w.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('match_id_key', ?)",
                (secrets.token_bytes(32),),
            )
            row = w.execute("SELECT value FROM meta WHERE key = 'match_id_key'").fetchone()
        return bytes(row[0])

    def match_id_key(self) -> bytes:
        """The key of the match-id permutation (stored, so ids are stable across restarts)."""
        return self._match_key

    # -- audit

    @staticmethod
    def _audit(
        conn: sqlite3.Connection,
        actor: Principal,
        action: str,
        *,
        case_id: int | None = None,
        detail: dict[str, object] | None = None,
        at: int | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit(at, actor, org_id, action, case_id, detail) VALUES (?,?,?,?,?,?)",
            (
                at or _now_ms(),
                actor.audit_name,
                actor.org_id,
                action,
                case_id,
                _check_detail(detail or {}),
            ),
        )

    def audit_log(
        self, *, case_id: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The most recent audit rows, newest first, optionally for one case.

        ``before`` (an entry id) pages backwards: pass the last id of the previous page.
        """
        sql = "SELECT id, at, actor, org_id, action, case_id, detail FROM audit WHERE 1"
        args: list[object] = []
        if case_id is not None:
            sql += " AND case_id = ?"
            args.append(case_id)
        if before is not None:
            sql += " AND id < ?"
            args.append(before)
        rows = self._reader().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [
            AuditEntry(r[0], _dt_required(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in rows.fetchall()
        ]

    # -- organisations

    def create_organisation(self, name: str, *, actor: Principal) -> Organisation:
        """Create an organisation; ``Conflict`` if the name is taken."""
        now = _now_ms()
        try:
            with self._write() as w:
                cur = w.execute(
                    "INSERT INTO organisations(name, created_at) VALUES (?, ?)", (name, now)
                )
                org_id = int(cur.lastrowid or 0)
                self._audit(w, actor, "organisation.create", detail={"org_id": org_id}, at=now)
        except sqlite3.IntegrityError:
            raise Conflict("an organisation with this name exists") from None
        return Organisation(org_id, name, _dt_required(now))

    def get_organisation(self, org_id: int) -> Organisation | None:
        """One organisation, or None."""
        row = (
            self._reader()
            .execute("SELECT id, name, created_at FROM organisations WHERE id = ?", (org_id,))
            .fetchone()
        )
        return None if row is None else Organisation(row[0], row[1], _dt_required(row[2]))

    def list_organisations(self) -> list[Organisation]:
        """Every organisation, by id."""
        rows = self._reader().execute("SELECT id, name, created_at FROM organisations ORDER BY id")
        return [Organisation(r[0], r[1], _dt_required(r[2])) for r in rows.fetchall()]

    # -- cases

    def create_case(
        self, org_id: int, number: str, secret_hash: str, *, actor: Principal
    ) -> CaseRecord:
        """Create an active case; ``Conflict`` if the number is taken, ``NotFound`` for the org."""
        now = _now_ms()
        try:
            with self._write() as w:
                cur = w.execute(
                    "INSERT INTO cases(number, org_id, state, secret_hash, created_at) "
                    "VALUES (?, ?, 'active', ?, ?)",
                    (number, org_id, secret_hash, now),
                )
                case_id = int(cur.lastrowid or 0)
                self._audit(w, actor, "case.create", case_id=case_id, at=now)
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise NotFound("no such organisation") from None
            raise Conflict("a case with this number exists") from None
        record = self.get_case_by_id(case_id)
        assert record is not None  # just committed; cases are never deleted
        return record

    def get_case(self, number: str) -> CaseRecord | None:
        """The case with this number, or None."""
        row = (
            self._reader()
            .execute(f"SELECT {_CASE_COLUMNS} FROM cases WHERE number = ?", (number,))
            .fetchone()
        )
        return None if row is None else _case(row)

    def get_case_by_id(self, case_id: int) -> CaseRecord | None:
        """The case with this row id, or None."""
        row = (
            self._reader()
            .execute(f"SELECT {_CASE_COLUMNS} FROM cases WHERE id = ?", (case_id,))
            .fetchone()
        )
        return None if row is None else _case(row)

    def case_signal_counts(self, case_id: int) -> dict[str, int]:
        """Number of stored hashes of the case, per signal type."""
        rows = self._reader().execute(
            "SELECT signal, count(*) FROM hashes WHERE case_id = ? GROUP BY signal", (case_id,)
        )
        return {name: int(n) for name, n in rows.fetchall()}

    def case_counts(self) -> dict[str, int]:
        """Number of cases per state."""
        rows = self._reader().execute("SELECT state, count(*) FROM cases GROUP BY state")
        return {state: int(n) for state, n in rows.fetchall()}

    def hash_counts(self) -> dict[str, int]:
        """Number of stored hashes per signal type (kept as counters: no scan)."""
        return self._signal_counts(self._reader())

    @staticmethod
    def _signal_counts(conn: sqlite3.Connection) -> dict[str, int]:
        rows = dict(conn.execute("SELECT signal, hashes FROM signal_counts WHERE hashes > 0"))
        # In registry order, so that loading and statistics list signal types alike.
        return {name: int(rows[name]) for name in SIGNALS if name in rows}

    # -- hashes

    def add_hashes(self, case_id: int, hashes: Sequence[Hash], *, actor: Principal) -> AddedHashes:
        """Insert ``hashes`` into an active case, with change-log and audit rows, atomically.

        Hashes already in the case (same signal and value), or repeated in ``hashes``, are
        skipped. ``NotFound`` if the case does not exist, ``Conflict`` if it is withdrawn.
        """
        now = _now_ms()
        with self._write() as w:
            row = w.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                raise NotFound("no such case")
            if row[0] != CaseState.ACTIVE:
                raise Conflict("the case is withdrawn: open a new case to enroll again")
            seen = {
                (s, bytes(v))
                for s, v in w.execute(
                    "SELECT signal, value FROM hashes WHERE case_id = ?", (case_id,)
                )
            }
            fresh: list[Hash] = []
            for h in hashes:
                key = (h.signal.name, h.value)
                if key not in seen:
                    seen.add(key)
                    fresh.append(h)
            ids: list[int] = []
            if fresh:
                # Under BEGIN IMMEDIATE we are the only writer, and AUTOINCREMENT gives each
                # row the next id after the highest ever used, so the new ids are the block
                # right after the current sequence value; checked below, not assumed.
                seq_row = w.execute("SELECT seq FROM sqlite_sequence WHERE name = 'hashes'")
                first = int((seq_row.fetchone() or (0,))[0]) + 1
                w.executemany(
                    "INSERT INTO hashes(case_id, signal, value, quality, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(case_id, h.signal.name, h.value, h.quality, now) for h in fresh],
                )
                last = w.execute("SELECT seq FROM sqlite_sequence WHERE name = 'hashes'")
                if int(last.fetchone()[0]) != first + len(fresh) - 1:
                    raise RuntimeError("hash row ids were not allocated as one block")
                ids = list(range(first, first + len(fresh)))
                w.execute(
                    "INSERT INTO changes(op, first_id, last_id, at) VALUES ('add', ?, ?, ?)",
                    (first, ids[-1], now),
                )
                w.execute(
                    "UPDATE cases SET hash_count = hash_count + ? WHERE id = ?",
                    (len(fresh), case_id),
                )
                w.executemany(
                    "INSERT INTO signal_counts(signal, hashes) VALUES (?, ?) "
                    "ON CONFLICT(signal) DO UPDATE SET hashes = hashes + excluded.hashes",
                    Counter(h.signal.name for h in fresh).items(),
                )
            hash_count = w.execute("SELECT hash_count FROM cases WHERE id = ?", (case_id,))
            total = int(hash_count.fetchone()[0])
            detail: dict[str, object] = dict(Counter(h.signal.name for h in fresh))
            detail.update(added=len(fresh), duplicates=len(hashes) - len(fresh))
            self._audit(w, actor, "case.enroll", case_id=case_id, detail=detail, at=now)
        return AddedHashes(ids, fresh, len(hashes) - len(fresh), total)

    def withdraw_case(self, case_id: int, *, actor: Principal) -> list[tuple[int, str]]:
        """Delete every hash of the case and mark it withdrawn, atomically; return the removed
        ``(hash id, signal)`` pairs. Withdrawing a withdrawn case removes nothing (idempotent).

        After the commit the WAL is checkpointed and truncated (best effort; see
        ``purge_wal``) so that the deleted values leave the files too.
        """
        now = _now_ms()
        with self._write() as w:
            row = w.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                raise NotFound("no such case")
            removed = [
                (int(i), s)
                for i, s in w.execute(
                    "SELECT id, signal FROM hashes WHERE case_id = ? ORDER BY id", (case_id,)
                )
            ]
            if removed:
                w.executemany(
                    "INSERT INTO changes(op, first_id, last_id, at) VALUES ('remove', ?, ?, ?)",
                    [(a, b, now) for a, b in _runs([i for i, _ in removed])],
                )
                w.execute("DELETE FROM hashes WHERE case_id = ?", (case_id,))
                w.executemany(
                    "UPDATE signal_counts SET hashes = hashes - ? WHERE signal = ?",
                    [(n, name) for name, n in Counter(s for _, s in removed).items()],
                )
            if row[0] == CaseState.ACTIVE:
                w.execute(
                    "UPDATE cases SET state = 'withdrawn', withdrawn_at = ?, hash_count = 0 "
                    "WHERE id = ?",
                    (now, case_id),
                )
            self._audit(
                w, actor, "case.withdraw", case_id=case_id, detail={"removed": len(removed)}, at=now
            )
        if removed:
            self.purge_wal()
        return removed

    def purge_wal(self) -> bool:
        """Copy the WAL into the database file and truncate it; True when fully done.

        Deleted rows are zeroed in the database pages (secure_delete), but older WAL frames
        still hold the pages as they were until the WAL is reset. A reader in the middle of a
        long read (e.g. start-up loading) holds the checkpoint back: rather than make the
        withdrawal wait for it, this gives up after a short wait, returns False, and retries
        every second in the background until it succeeds (and once more on ``close``).
        """
        with self._write_lock:
            if self._closed:
                return False
            conn = self._writer
            conn.execute("PRAGMA busy_timeout = 250")
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError:
                busy = 1
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            done = busy == 0
            if not done and self._purge_timer is None:
                self._purge_timer = threading.Timer(1.0, self._retry_purge)
                self._purge_timer.daemon = True
                self._purge_timer.start()
        return done

    def _retry_purge(self) -> None:
        with self._write_lock:
            self._purge_timer = None
        self.purge_wal()

    def active_ids(self, ids: Sequence[int]) -> set[int]:
        """The subset of ``ids`` whose hash rows exist now (one query for any number of ids)."""
        if len(ids) == 0:
            return set()
        rows = self._reader().execute(
            "SELECT id FROM hashes WHERE id IN (SELECT value FROM json_each(?))",
            (_json_ids(ids),),
        )
        return {r[0] for r in rows.fetchall()}

    def case_of_hash(self, hash_id: int) -> int | None:
        """The case holding hash row ``hash_id``, or None if it does not exist (any more)."""
        row = (
            self._reader().execute("SELECT case_id FROM hashes WHERE id = ?", (hash_id,)).fetchone()
        )
        return None if row is None else int(row[0])

    def hashes_by_id(self, ids: Sequence[int]) -> list[tuple[int, str, bytes]]:
        """``(id, signal, value)`` of the hash rows among ``ids`` that still exist, by id.

        For a follower applying "add" changes; rows withdrawn since are simply absent.
        """
        if len(ids) == 0:
            return []
        rows = self._reader().execute(
            "SELECT id, signal, value FROM hashes WHERE id IN (SELECT value FROM json_each(?)) "
            "ORDER BY id",
            (_json_ids(ids),),
        )
        return [(int(i), s, bytes(v)) for i, s, v in rows.fetchall()]

    # -- feedback

    def record_feedback(self, case_id: int, correct: bool, *, actor: Principal) -> None:
        """Count one "this match was right/wrong" report against the case."""
        now = _now_ms()
        column = "reported_correct" if correct else "reported_wrong"
        with self._write() as w:
            cur = w.execute(f"UPDATE cases SET {column} = {column} + 1 WHERE id = ?", (case_id,))
            if cur.rowcount == 0:
                raise NotFound("no such case")
            w.execute(
                "INSERT INTO feedback(case_id, correct, actor, org_id, at) VALUES (?,?,?,?,?)",
                (case_id, int(correct), actor.audit_name, actor.org_id, now),
            )
            self._audit(
                w,
                actor,
                "match.feedback",
                case_id=case_id,
                detail={"correct": int(correct)},
                at=now,
            )

    # -- API keys

    def create_api_key(
        self,
        name: str,
        role: Role,
        org_id: int | None,
        key_hash: bytes,
        prefix: str,
        *,
        actor: Principal,
    ) -> ApiKeyRecord:
        """Store a new API key (its hash only); ``NotFound`` for an unknown organisation."""
        now = _now_ms()
        try:
            with self._write() as w:
                cur = w.execute(
                    "INSERT INTO api_keys(name, role, org_id, key_hash, prefix, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, str(role), org_id, key_hash, prefix, now),
                )
                key_id = int(cur.lastrowid or 0)
                self._audit(
                    w, actor, "key.create", detail={"key_id": key_id, "role": str(role)}, at=now
                )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise NotFound("no such organisation") from None
            raise Conflict("this key exists") from None
        return ApiKeyRecord(key_id, name, role, org_id, prefix, _dt_required(now), None)

    def find_api_key(self, key_hash: bytes) -> ApiKeyRecord | None:
        """The key with this hash (revoked or not), or None."""
        row = (
            self._reader()
            .execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
            .fetchone()
        )
        return None if row is None else _key(row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, by id (no key material: only the display prefix)."""
        rows = self._reader().execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id")
        return [_key(r) for r in rows.fetchall()]

    def revoke_api_key(self, key_id: int, *, actor: Principal) -> ApiKeyRecord:
        """Revoke a key (idempotent); ``NotFound`` if there is no such key."""
        now = _now_ms()
        with self._write() as w:
            cur = w.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            exists = w.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if exists is None:
                raise NotFound("no such API key")
            if cur.rowcount:
                self._audit(w, actor, "key.revoke", detail={"key_id": key_id}, at=now)
        row = (
            self._reader()
            .execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
            .fetchone()
        )
        return _key(row)

    # -- loading and following

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[SQLiteSnapshot]:
        """A consistent read of all hashes and the change-log mark it includes.

        Uses its own connection: the read transaction stays open while the caller iterates,
        and must not hold a thread's shared reader connection.
        """
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            # The first SELECT fixes the snapshot; both reads below see the same state.
            mark = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            counts = self._signal_counts(conn)
            conn.text_factory = bytes  # the block query returns raw bytes (see _BLOCK_SQL)
            yield SQLiteSnapshot(int(mark), counts, conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def changes_since(self, seq: int, *, limit: int = 100_000) -> list[Change]:
        """Change-log rows after ``seq``, oldest first, at most ``limit``."""
        rows = self._reader().execute(
            "SELECT seq, op, first_id, last_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [Change(int(s), op, int(a), int(b)) for s, op, a, b in rows.fetchall()]

    def prune_changes(self, upto_seq: int) -> int:
        """Delete change-log rows up to ``upto_seq`` (once every follower is past it)."""
        with self._write() as w:
            cur = w.execute("DELETE FROM changes WHERE seq <= ?", (upto_seq,))
        return cur.rowcount
