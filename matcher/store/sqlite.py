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
  A long reader (a start-up snapshot) can hold that reset back; the store then retries in the
  background and once more when the snapshot closes, without the caller asking.

Concurrency: SQLite has one writer at a time, so all writes go through one connection under a
lock (no ``SQLITE_BUSY`` between our own threads), each in a ``BEGIN IMMEDIATE`` transaction;
other processes on the same file wait on its lock. Reads use one connection per thread (a
``sqlite3.Connection`` must not be used by two threads at once); each read is its own short
transaction, so it sees everything committed before it began.

Change-log positions: with one writer, a change row's ``seq`` (AUTOINCREMENT) is its commit
order, so the position is the decimal text of the last ``seq`` read, and a follower asking from
it can never skip a row committed later. (A PostgreSQL backend needs another rule: see
``matcher.store.base``.)

The schema, and how a version-1 folder (cases of loose hashes) maps to items, are in
``matcher.store.sqlite_schema``: each v1 enrollment call (the hash rows of one case sharing one
``created_at``) becomes one item, split at 65,536 hashes; v1 feedback counts go to the case's
first item; withdrawn v1 cases get no items.

Times are integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from matcher.audit import Action, encode_detail
from matcher.credentials import item_fingerprint
from matcher.errors import Conflict, InvalidInput, NotFound, Unavailable
from matcher.principal import Principal, Role
from matcher.records import (
    ITEM_BITS,
    AllowlistAdded,
    AllowlistCodes,
    AllowlistEntry,
    AllowlistSource,
    ApiKeyRecord,
    AuditEntry,
    CaseRecord,
    CaseState,
    Change,
    ChangeBatch,
    CodeChunk,
    ItemKind,
    ItemRecord,
    ItemState,
    KeyPolicy,
    NewItem,
    Organisation,
    Quarantine,
    QuarantineReason,
    ReportReason,
    ReviewEntry,
    VerdictRecord,
)
from matcher.signals import SIGNALS, Hash
from matcher.store.base import AddedItems, ProbeRecord, ProbeTally
from matcher.store.crypto import KEY_FILE_ENV, ItemCipher, Keyring, default_key_file, load_keyring
from matcher.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION, Migration

__all__ = ["DB_FILENAME", "LEDGER_FILENAME", "SCHEMA_VERSION", "SQLiteSnapshot", "SQLiteStore"]

DB_FILENAME = "matcher.db"
LEDGER_FILENAME = "withdrawals.jsonl"
"""The withdrawal ledger beside the database: one JSON line per withdrawal (ids and times, no
hash value), written and fsynced before the withdrawal commits, and re-applied by ``restore``
so that a restored backup never brings back what was withdrawn after it was taken."""

_SEALED_FROM = 3  # the first schema version whose values are sealed

_CHUNK_ROWS = 1 << 16


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _dt_required(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _json_ids(ids: Sequence[int]) -> str:
    # One JSON array parameter instead of thousands of "?" placeholders: SQLite's json_each
    # turns it back into rows, and the statement text stays the same (cached) for any size.
    return json.dumps([int(i) for i in ids])


def _near_halves(record: ProbeRecord) -> tuple[list[int], list[int]]:
    """The half digests a request's near check looks its held neighbours up by: every
    first half, every second half (``ProbeRecord``)."""
    first: set[int] = set()
    second: set[int] = set()
    for _, (a, b), _ in record.near:
        first.add(a)
        second.add(b)
    return list(first), list(second)


def _ints_json(values: Sequence[int]) -> str:
    # Digests are ints already (``ProbeRecord``): joined directly, a PDQ hash's 257 take
    # microseconds where ``_json_ids`` converts and encodes each.
    return "[" + ",".join(map(str, values)) + "]"


def _near_rows(
    record: ProbeRecord, held: Mapping[int, tuple[int, int, int]]
) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """What a request's near digests write, given the digests ``held`` in the window that
    share a half with one of them (with their touches and halves): rows to write afresh (not
    held), ``(digest, touches, first half, second half)`` with 1 touch if near else 0, and
    held digests touched again (near now). In request order: a digest is near when a
    neighbour sharing a half is held or came earlier in the request. A hash's own row shares
    both its halves, so ``held`` has it when it is held. Its neighbours' digests are asked
    only when another digest shares a half with it (copies, and probes; rare otherwise)."""
    by_first: dict[int, set[int]] = {}
    by_second: dict[int, set[int]] = {}
    for digest, (_, first, second) in held.items():
        by_first.setdefault(first, set()).add(digest)
        by_second.setdefault(second, set()).add(digest)
    seen = set(held)
    fresh: list[tuple[int, int, int, int]] = []
    again: list[int] = []
    for digest, (first, second), neighbours in record.near:
        close = by_first.get(first, set()) | by_second.get(second, set())
        close.discard(digest)
        near = bool(close) and not close.isdisjoint(neighbours())
        if digest in held:
            if near and digest not in again:
                again.append(digest)
        elif digest not in seen:
            fresh.append((digest, int(near), first, second))
        if digest not in seen:
            seen.add(digest)
            by_first.setdefault(first, set()).add(digest)
            by_second.setdefault(second, set()).add(digest)
    return fresh, again


def _hit_rows(
    record: ProbeRecord, held: Mapping[tuple[int, int], bool]
) -> tuple[dict[tuple[int, int], bool], set[int]]:
    """The (item, query) rows of ``record`` to write (new in the window, or now at the edge)
    and the items whose counts they grow."""
    wanted: dict[tuple[int, int], bool] = {}
    for item, digest, edge in record.hits:
        pair = (int(item), int(digest))
        wanted[pair] = wanted.get(pair, False) or bool(edge)
    changed = {
        pair: edge or held.get(pair, False)
        for pair, edge in wanted.items()
        if pair not in held or (edge and not held[pair])
    }
    return changed, {item for item, _ in changed}


def _signal_dict(text: str) -> dict[str, int]:
    counts = json.loads(text)
    return {name: int(counts[name]) for name in SIGNALS if name in counts}


# A case's counts derive from its items (no counters to keep in step).
_CASE_SQL = (
    "SELECT c.id, c.number, c.org_id, c.state, c.secret_hash, "
    "count(i.id) FILTER (WHERE i.state = 'active'), "
    "coalesce(sum(i.hash_count) FILTER (WHERE i.state = 'active'), 0), "
    "coalesce(sum(i.reported_correct), 0), coalesce(sum(i.reported_wrong), 0), "
    "c.created_at, c.withdrawn_at "
    "FROM cases c LEFT JOIN items i ON i.case_id = c.id WHERE c.{column} = ? GROUP BY c.id"
)
# The open quarantine, if any, rides along as correlated subqueries (a primary-key lookup
# each), so every statement that reads items keeps its plain "FROM items WHERE ..." shape.
_QUARANTINE_COLUMNS = (
    "reviewed_at, "
    "(SELECT q.reason FROM quarantines q WHERE q.item_id = items.id), "
    "(SELECT q.since FROM quarantines q WHERE q.item_id = items.id), "
    "(SELECT q.detail FROM quarantines q WHERE q.item_id = items.id)"
)
_ITEM_COLUMNS = (
    "id, case_id, number, kind, state, label, hash_count, signals, reported_correct, "
    "reported_wrong, created_at, withdrawn_at, " + _QUARANTINE_COLUMNS
)
_KEY_COLUMNS = "id, name, role, org_id, prefix, created_at, revoked_at"


def _case(row: tuple[Any, ...]) -> CaseRecord:
    return CaseRecord(
        id=row[0],
        number=row[1],
        org_id=row[2],
        state=CaseState(row[3]),
        secret_hash=row[4],
        item_count=int(row[5]),
        hash_count=int(row[6]),
        reported_correct=int(row[7]),
        reported_wrong=int(row[8]),
        created_at=_dt_required(row[9]),
        withdrawn_at=_dt(row[10]),
    )


def _item(row: tuple[Any, ...]) -> ItemRecord:
    return ItemRecord(
        id=row[0],
        case_id=row[1],
        number=row[2],
        kind=ItemKind(row[3]),
        state=ItemState(row[4]),
        label=row[5],
        hash_count=row[6],
        hashes_by_signal=_signal_dict(row[7]),
        reported_correct=row[8],
        reported_wrong=row[9],
        created_at=_dt_required(row[10]),
        withdrawn_at=_dt(row[11]),
        reviewed_at=_dt(row[12]),
        quarantine=_quarantine(row[13], row[14], row[15]),
    )


def _quarantine(reason: str | None, since: int | None, detail: Any) -> Quarantine | None:
    if reason is None or since is None:
        return None
    counts = json.loads(detail if isinstance(detail, str) else bytes(detail).decode())
    return Quarantine(
        QuarantineReason(reason),
        _dt_required(since),
        partners=int(counts.get("partners", 0)),
        matches=int(counts.get("matches", 0)),
    )


def _quarantine_detail(partners: int, matches: int) -> str:
    return json.dumps({"partners": int(partners), "matches": int(matches)}, sort_keys=True)


def _verdict(row: tuple[Any, ...]) -> VerdictRecord:
    return VerdictRecord(
        item_id=int(row[0]),
        key_id=int(row[1]),
        correct=row[2] == "correct",
        reason=ReportReason(row[3]) if row[3] else None,
        at=_dt_required(row[4]),
    )


# The review queue: open quarantines of active items, with where they are (oldest first).
_QUEUE_SQL = (
    "SELECT c.number, i.number, i.label, q.reason, q.since, q.detail, i.reported_correct, "
    "i.reported_wrong, i.created_at, i.reviewed_at, c.org_id "
    "FROM quarantines q JOIN items i ON i.id = q.item_id JOIN cases c ON c.id = i.case_id "
    "WHERE i.state = 'active' {where} ORDER BY q.since, q.item_id"
)


def _queue_entry(row: tuple[Any, ...]) -> ReviewEntry:
    quarantine = _quarantine(row[3], row[4], row[5])
    assert quarantine is not None
    return ReviewEntry(
        case_number=row[0],
        number=int(row[1]),
        label=row[2],
        quarantine=quarantine,
        reported_correct=int(row[6]),
        reported_wrong=int(row[7]),
        created_at=_dt_required(row[8]),
        reviewed_at=_dt(row[9]),
        org_id=row[10],
    )


def _key(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0],
        name=row[1],
        role=Role(row[2]),
        org_id=row[3],
        prefix=row[4],
        created_at=_dt_required(row[5]),
        revoked_at=_dt(row[6]),
    )


def _policy_to_json(policy: KeyPolicy) -> str:
    at = policy.suspended_at
    return json.dumps(
        {
            "exact_distances": policy.exact_distances,
            "max_distance": dict(policy.max_distance),
            "daily_hashes": policy.daily_hashes,
            "suspended_at": None if at is None else int(at.timestamp() * 1000),
            "suspend_reason": policy.suspend_reason,
            "named_in_reports": policy.named_in_reports,
        },
        sort_keys=True,
    )


def _with_throttle(policy: KeyPolicy, until_ms: int | None) -> KeyPolicy:
    """``policy`` with the key's probing throttle (``probe_keys``; 0 or None: none)."""
    if not until_ms:
        return policy
    return dataclasses.replace(policy, throttled_until=_dt(int(until_ms)))


def _policy_from_json(text: str | bytes) -> KeyPolicy:
    raw = json.loads(text)
    return KeyPolicy(
        exact_distances=bool(raw.get("exact_distances", False)),
        max_distance={str(k): int(v) for k, v in raw.get("max_distance", {}).items()},
        daily_hashes=raw.get("daily_hashes"),
        suspended_at=_dt(raw.get("suspended_at")),
        suspend_reason=str(raw.get("suspend_reason", "")),
        named_in_reports=bool(raw.get("named_in_reports", False)),
    )


def _unique_hashes(hashes: Sequence[Hash]) -> list[Hash]:
    """``hashes`` without repeats of a (signal, value), keeping the first one's quality."""
    seen: set[tuple[str, bytes]] = set()
    out: list[Hash] = []
    for h in hashes:
        key = (h.signal.name, h.value)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


_ALLOWLIST_COLUMNS = "id, signal, label, source, created_at"


def _allowlist_entry(row: tuple[Any, ...]) -> AllowlistEntry:
    return AllowlistEntry(
        int(row[0]), row[1], row[2], AllowlistSource(row[3]), _dt_required(int(row[4]))
    )


def _allowlist_chunks(rows: Sequence[tuple[Any, ...]]) -> list[CodeChunk]:
    # (id, signal, value) rows -> one chunk per signal type, in registry order.
    by_signal: dict[str, list[tuple[int, bytes]]] = {}
    for entry_id, signal, value in rows:
        if signal in SIGNALS and len(value) == SIGNALS[signal].byte_length:
            by_signal.setdefault(signal, []).append((int(entry_id), bytes(value)))
    chunks = []
    for name in SIGNALS:
        got = by_signal.get(name)
        if not got:
            continue
        ids = np.fromiter((i for i, _ in got), np.int64, len(got))
        codes = np.frombuffer(b"".join(v for _, v in got), np.uint8).reshape(
            len(got), SIGNALS[name].byte_length
        )
        chunks.append(CodeChunk(name, ids, codes.copy()))
    return chunks


def _allowlist_news(hashes: Sequence[Hash]) -> list[Hash]:
    if not hashes:
        raise InvalidInput("an allowlist addition needs at least one hash", field="hashes")
    return _unique_hashes(hashes)


def _parse_position(position: str) -> int:
    if position == "":
        return 0
    if not position.isascii() or not position.isdigit():
        raise InvalidInput("not a change-log position of this store", field="position")
    return int(position)


# One block of the start-up scan: sealed items in id order (one blob per item, so a block of
# 512 items holds ~100k hashes and costs 512 AES-GCM calls).
_BLOCK_SQL = "SELECT item_id, sealed FROM item_codes WHERE item_id > ? ORDER BY item_id LIMIT ?"
_BLOCK_ITEMS = 512


def _codes_by_signal(cipher: ItemCipher, rows: Sequence[tuple[int, bytes]]) -> Iterator[CodeChunk]:
    """Open sealed items and yield one chunk per signal type, entry ids ascending."""
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for item_id, sealed in rows:
        opened = cipher.open_item(int(item_id), sealed)
        base = np.int64(int(item_id) << ITEM_BITS)
        for name, (positions, codes) in opened.signals.items():
            ids, blocks = parts.setdefault(name, ([], []))
            ids.append(positions.astype(np.int64) + base)
            blocks.append(codes)
    for name in SIGNALS:
        if name in parts:
            ids, blocks = parts[name]
            id_arr = np.concatenate(ids)
            order = np.argsort(id_arr, kind="stable")
            codes = np.concatenate(blocks)
            if np.any(order != np.arange(len(order))):
                id_arr, codes = id_arr[order], codes[order]
            yield CodeChunk(name, id_arr, codes)


@dataclass
class SQLiteSnapshot:
    """A consistent read of every hash row (see ``Snapshot`` in ``matcher.store.base``)."""

    position: str
    counts: dict[str, int]
    _conn: sqlite3.Connection
    _cipher: ItemCipher

    @property
    def total(self) -> int:
        """Number of hashes in the snapshot."""
        return sum(self.counts.values())

    def chunks(self, rows: int = _CHUNK_ROWS) -> Iterator[CodeChunk]:
        """Yield every stored hash in blocks of whole items: per block one chunk per signal
        type, each signal's entry ids ascending across blocks. ``rows`` bounds a block's
        hashes roughly (a block is at least one item)."""
        last = -1
        items = max(1, min(_BLOCK_ITEMS, rows // 128))
        while True:
            block = self._conn.execute(_BLOCK_SQL, (last, items)).fetchall()
            if not block:
                break
            yield from _codes_by_signal(self._cipher, block)
            last = int(block[-1][0])


class SQLiteStore:
    """The SQLite store (see the module docstring). Safe to share between threads.

    >>> import tempfile
    >>> with SQLiteStore(tempfile.mkdtemp()) as store:
    ...     store.schema_version
    6
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        key_file: str | os.PathLike[str] | None = None,
        keyring: Keyring | None = None,
        ledger: str | os.PathLike[str] | None = None,
        _migrations: Sequence[Migration] | None = None,
    ) -> None:
        """Open (creating and migrating if needed) the store in ``data_dir``.

        ``busy_timeout`` is how many seconds a write waits for another process's write lock
        before giving up with ``Unavailable``. The store key (``matcher.store.crypto``) is
        ``keyring`` if given, else ``MATCHER_STORE_KEY``, else ``key_file`` (default:
        ``MATCHER_KEY_FILE``, else ``<data_dir>.key`` beside the folder). A new store, or one
        whose values are not sealed yet (schema 1-2), gets a new key file; a sealed store whose
        key is missing is refused with ``Unavailable``. ``ledger`` is the withdrawal ledger
        file (default ``withdrawals.jsonl`` in the folder, where ``matcher restore`` looks).
        """
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self.ledger_path = Path(ledger) if ledger else self.data_dir / LEDGER_FILENAME
        if key_file is None:
            key_file = os.environ.get(KEY_FILE_ENV) or default_key_file(self.data_dir)
        self.key_file = Path(key_file)
        self._migrations = list(MIGRATIONS if _migrations is None else _migrations)
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._purge_timer: threading.Timer | None = None
        self._purge_pending = False
        try:
            # The folder holds sensitive hashes: readable by the owner only, and so are its
            # files (SQLite gives the WAL and shared-memory files the database file's mode).
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{self.path}{suffix}", 0o600)
            self._writer = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise Unavailable(f"cannot open the store in {self.data_dir}: {exc}") from exc
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            sealed = self._stored_version() >= _SEALED_FROM
            if keyring is None:
                keyring = load_keyring(self.key_file, create=not sealed)
            self._cipher = ItemCipher(keyring)
            self._migrate()
            self._key = self._ensure_secret_key()
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
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: commits on success, rolls back on any exception.

        Nothing is acknowledged unless COMMIT returned. A database that is locked by another
        process for longer than the busy timeout, or that fails to write (disk full, I/O
        error), raises ``Unavailable``: the caller may retry. ``durable=False`` (probing
        counts only, acknowledged to no one) commits without an fsync (``synchronous=NORMAL``
        for this transaction: in WAL mode a power loss may drop it, never corrupt the file;
        the next durable commit syncs it along).
        """
        with self._write_lock:
            if self._closed:
                raise Unavailable("the store is closed")
            conn = self._writer
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction(conn):
                    yield conn
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        try:
            # IMMEDIATE takes the write lock now, so another process writing to the same
            # file makes us wait (busy timeout) here rather than fail halfway through.
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Unavailable("the store is busy; retry later") from exc
        try:
            yield
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

    # -- schema and key

    @property
    def schema_version(self) -> int:
        """The schema version of the database file."""
        row = self._reader().execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _stored_version(self) -> int:
        conn = self._writer
        with self._write_lock:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if not found:
                return 0
            return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)

    @property
    def cipher(self) -> ItemCipher:
        """The store's cipher (its keyring): for backup, restore and key rotation."""
        return self._cipher

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
        moved = False
        for version in range(current + 1, len(self._migrations) + 1):
            with self._write() as w:
                # Re-check inside the transaction: another process may have migrated meanwhile.
                done = w.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,))
                if done.fetchone():
                    continue
                step = self._migrations[version - 1]
                if callable(step):
                    step(w, self._cipher)
                else:
                    for statement in step:
                        w.execute(statement)
                w.execute("INSERT INTO schema_version VALUES (?, ?)", (version, _now_ms()))
            moved = moved or current > 0
        if moved:
            # A migration of an existing folder may have copied hash values into new tables
            # and dropped the old ones. secure_delete zeroes the freed pages; checkpointing now
            # puts the zeroed pages into the database file at once (no VACUUM needed).
            with self._write_lock:
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _ensure_secret_key(self) -> bytes:
        """The store's secret key, made on first open; stored wrapped by the store key (from
        schema 3 on), so opening it also checks that the keyring fits this database."""
        sealed = len(self._migrations) >= _SEALED_FROM
        with self._write() as w:
            fresh = os.urandom(32)
            w.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('secret_key', ?)",
                (self._cipher.seal_secret("secret_key", fresh) if sealed else fresh,),
            )
            row = w.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
        if not sealed:
            return bytes(row[0])
        try:
            return self._cipher.open_secret("secret_key", bytes(row[0]))
        except Unavailable as exc:
            raise Unavailable(
                f"the store key ({self._cipher.ring.source or 'given'}) does not open the data "
                f"in {self.data_dir}: {exc}"
            ) from None

    def secret_key(self) -> bytes:
        """The store's random key (item ids, fingerprints); stored wrapped, so stable across
        restarts and the same for every handle."""
        return self._key

    # -- audit

    @staticmethod
    def _audit(
        conn: sqlite3.Connection,
        actor: Principal,
        action: Action,
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
                str(Action(action)),
                case_id,
                encode_detail(detail or {}),
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
                self._audit(w, actor, Action.ORG_CREATE, detail={"org_id": org_id}, at=now)
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
                self._audit(w, actor, Action.CASE_CREATE, case_id=case_id, at=now)
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise NotFound("no such organisation") from None
            raise Conflict("a case with this number exists") from None
        record = self.get_case_by_id(case_id)
        assert record is not None  # just committed; cases are never deleted
        return record

    @staticmethod
    def _case_by(conn: sqlite3.Connection, column: str, value: object) -> CaseRecord | None:
        row = conn.execute(_CASE_SQL.format(column=column), (value,)).fetchone()
        return None if row is None else _case(row)

    def get_case(self, number: str) -> CaseRecord | None:
        """The case with this number, or None."""
        return self._case_by(self._reader(), "number", number)

    def get_case_by_id(self, case_id: int) -> CaseRecord | None:
        """The case with this id, or None."""
        return self._case_by(self._reader(), "id", case_id)

    def list_items(self, case_id: int) -> list[ItemRecord]:
        """Every item of the case, withdrawn ones included, by number."""
        rows = self._reader().execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE case_id = ? ORDER BY number", (case_id,)
        )
        return [_item(r) for r in rows.fetchall()]

    def get_item(self, case_id: int, number: int) -> ItemRecord | None:
        """Item ``number`` of the case, or None."""
        row = (
            self._reader()
            .execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE case_id = ? AND number = ?",
                (case_id, number),
            )
            .fetchone()
        )
        return None if row is None else _item(row)

    def case_counts(self) -> dict[str, int]:
        """Number of cases per state."""
        rows = self._reader().execute("SELECT state, count(*) FROM cases GROUP BY state")
        return {state: int(n) for state, n in rows.fetchall()}

    def hash_counts(self) -> dict[str, int]:
        """Number of stored hashes per signal type (kept as counters: no scan)."""
        return self._signal_counts(self._reader())

    def item_count(self) -> int:
        """Number of active items."""
        row = self._reader().execute("SELECT count(*) FROM items WHERE state = 'active'")
        return int(row.fetchone()[0])

    @staticmethod
    def _signal_counts(conn: sqlite3.Connection) -> dict[str, int]:
        rows = dict(conn.execute("SELECT signal, hashes FROM signal_counts WHERE hashes > 0"))
        # In registry order, so that loading and statistics list signal types alike.
        return {name: int(rows[name]) for name in SIGNALS if name in rows}

    # -- enrollment

    def add_items(self, case_id: int, items: Sequence[NewItem], *, actor: Principal) -> AddedItems:
        """Enroll ``items`` into an active case, all or none (see ``CaseStore.add_items``)."""
        if not items:
            raise InvalidInput("an enrollment needs at least one item", field="items")
        now = _now_ms()
        with self._write() as w:
            row = w.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                raise NotFound("no such case")
            if row[0] != CaseState.ACTIVE:
                raise Conflict("the case is withdrawn: open a new case to enroll again")
            top = w.execute("SELECT max(number) FROM items WHERE case_id = ?", (case_id,))
            number = int(top.fetchone()[0] or 0)
            item_ids: list[int] = []
            created: list[bool] = []
            added: Counter[str] = Counter()
            for item in items:
                hashes = _unique_hashes(item.hashes)
                fingerprint = item_fingerprint(self._key, hashes)
                held = w.execute(
                    "SELECT id FROM items WHERE case_id = ? AND fingerprint = ?",
                    (case_id, fingerprint),
                ).fetchone()
                if held is not None:  # the same image again (a retry, or twice in one call)
                    item_ids.append(int(held[0]))
                    created.append(False)
                    continue
                number += 1
                signals = Counter(h.signal.name for h in hashes)
                cur = w.execute(
                    "INSERT INTO items(case_id, number, kind, state, label, fingerprint, "
                    "hash_count, signals, created_at) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?)",
                    (
                        case_id,
                        number,
                        str(item.kind),
                        item.label,
                        fingerprint,
                        len(hashes),
                        json.dumps({n: signals[n] for n in SIGNALS if n in signals}),
                        now,
                    ),
                )
                item_id = int(cur.lastrowid or 0)
                w.execute(
                    "INSERT INTO item_codes(item_id, sealed) VALUES (?, ?)",
                    (item_id, self._cipher.seal_item(item_id, hashes)),
                )
                w.execute(
                    "INSERT INTO changes(op, item_id, hash_count, at) VALUES ('add', ?, ?, ?)",
                    (item_id, len(hashes), now),
                )
                added.update(signals)
                item_ids.append(item_id)
                created.append(True)
            if added:
                w.executemany(
                    "INSERT INTO signal_counts(signal, hashes) VALUES (?, ?) "
                    "ON CONFLICT(signal) DO UPDATE SET hashes = hashes + excluded.hashes",
                    added.items(),
                )
            detail: dict[str, object] = {n: added[n] for n in SIGNALS if n in added}
            detail.update(items=sum(created), existing=len(created) - sum(created))
            self._audit(w, actor, Action.CASE_ENROLL, case_id=case_id, detail=detail, at=now)
            records = self._items_by_id(w, item_ids)
            case = self._case_by(w, "id", case_id)
        assert case is not None
        return AddedItems([records[i] for i in item_ids], created, case)

    @staticmethod
    def _items_by_id(conn: sqlite3.Connection, item_ids: Sequence[int]) -> dict[int, ItemRecord]:
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN (SELECT value FROM json_each(?))",
            (_json_ids(item_ids),),
        )
        return {r[0]: _item(r) for r in rows.fetchall()}

    # -- withdrawal

    def _withdraw_items(
        self, w: sqlite3.Connection, rows: Sequence[tuple[int, int, str]], now: int
    ) -> int:
        """Delete the hashes of active items ``(id, hash_count, signals)`` and mark them
        withdrawn, with one "remove" change each; return the hashes removed."""
        removed: Counter[str] = Counter()
        for item_id, hash_count, signals in rows:
            cur = w.execute("DELETE FROM item_codes WHERE item_id = ?", (item_id,))
            if cur.rowcount != (1 if hash_count else 0):
                raise RuntimeError("an item's sealed codes are missing")
            w.execute(
                "INSERT INTO changes(op, item_id, hash_count, at) VALUES ('remove', ?, ?, ?)",
                (item_id, hash_count, now),
            )
            # Open quarantines only: a withdrawn item has nothing left to review.
            w.execute("DELETE FROM quarantines WHERE item_id = ?", (item_id,))
            removed.update(_signal_dict(signals))
        if rows:
            w.executemany(
                "UPDATE items SET state = 'withdrawn', withdrawn_at = ?, fingerprint = NULL, "
                "label = NULL, hash_count = 0, signals = '{}' WHERE id = ?",
                [(now, r[0]) for r in rows],
            )
            w.executemany(
                "UPDATE signal_counts SET hashes = hashes - ? WHERE signal = ?",
                [(n, name) for name, n in removed.items()],
            )
        return sum(removed.values())

    def withdraw_item(
        self, case_id: int, number: int, *, actor: Principal, ledger: bool = True
    ) -> ItemRecord:
        """Withdraw one item for good (see ``CaseStore.withdraw_item``); the withdrawal goes
        to the ledger first (``ledger=False`` only when re-applying the ledger itself)."""
        now = _now_ms()
        with self._write() as w:
            row = w.execute(
                "SELECT id, state, hash_count, signals FROM items WHERE case_id = ? AND number = ?",
                (case_id, number),
            ).fetchone()
            if row is None:
                raise NotFound("no such item")
            active = [(row[0], row[2], row[3])] if row[1] == ItemState.ACTIVE else []
            if active and ledger:
                self._ledger({"at": now, "case": case_id, "item": row[0]})
            removed = self._withdraw_items(w, active, now)
            self._audit(
                w,
                actor,
                Action.ITEM_WITHDRAW,
                case_id=case_id,
                detail={"item": number, "removed": removed},
                at=now,
            )
            record = self._items_by_id(w, [row[0]])[row[0]]
        if removed:
            self._purge_wal()
        return record

    def withdraw_case(self, case_id: int, *, actor: Principal, ledger: bool = True) -> CaseRecord:
        """Withdraw a case and all its items (see ``CaseStore.withdraw_case``), written to the
        ledger first as ``withdraw_item`` does."""
        now = _now_ms()
        with self._write() as w:
            row = w.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
            if row is None:
                raise NotFound("no such case")
            active = w.execute(
                "SELECT id, hash_count, signals FROM items WHERE case_id = ? AND state = 'active' "
                "ORDER BY number",
                (case_id,),
            ).fetchall()
            if ledger and (active or row[0] == CaseState.ACTIVE):
                self._ledger({"at": now, "case": case_id, "item": None})
            removed = self._withdraw_items(w, active, now)
            if row[0] == CaseState.ACTIVE:
                w.execute(
                    "UPDATE cases SET state = 'withdrawn', withdrawn_at = ? WHERE id = ?",
                    (now, case_id),
                )
            self._audit(
                w,
                actor,
                Action.CASE_WITHDRAW,
                case_id=case_id,
                detail={"items": len(active), "removed": removed},
                at=now,
            )
            record = self._case_by(w, "id", case_id)
        if removed:
            self._purge_wal()
        assert record is not None
        return record

    def rotate_key(self, ring: Keyring) -> int:
        """Seal every item's codes and the secret key again under ``ring``'s current key, in
        one transaction (``ring`` must still hold the keys they are sealed with now); return
        the number of items resealed. Then this handle uses ``ring``.

        The caller saves ``ring`` (with the old keys) before, and may drop the old keys after:
        a crash at any point leaves blobs that the saved keyring opens.
        """
        cipher = ItemCipher(ring)
        done = 0
        with self._write() as w:
            last = -1
            while True:
                rows = w.execute(
                    "SELECT item_id, sealed FROM item_codes WHERE item_id > ? ORDER BY item_id "
                    "LIMIT 1000",
                    (last,),
                ).fetchall()
                if not rows:
                    break
                w.executemany(
                    "UPDATE item_codes SET sealed = ? WHERE item_id = ?",
                    [
                        (cipher.reseal(sealed, cipher.item_context(item_id)), item_id)
                        for item_id, sealed in rows
                    ],
                )
                done += len(rows)
                last = int(rows[-1][0])
            w.execute(
                "UPDATE meta SET value = ? WHERE key = 'secret_key'",
                (cipher.seal_secret("secret_key", self._key),),
            )
            self._cipher = cipher
        # The blobs under the old key are now only in free pages (zeroed) and old WAL frames.
        self._purge_wal()
        return done

    def _ledger(self, entry: dict[str, object]) -> None:
        """Append one withdrawal to the ledger and fsync it (before the withdrawal commits:
        a crash in between leaves a ledger line for a withdrawal that was asked for, which a
        restore applies; never a committed withdrawal missing from the ledger)."""
        fd = os.open(self.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        except OSError as exc:
            raise Unavailable(f"cannot write the withdrawal ledger: {exc.strerror}") from None
        finally:
            os.close(fd)

    def reapply_withdrawals(self, entries: Sequence[dict[str, Any]], *, actor: Principal) -> int:
        """Withdraw again every item and case of ledger ``entries`` that is active here (after
        a restore); return how many withdrawals took effect. Unknown ids (enrolled after the
        backup, so not in it) are skipped."""
        applied = 0
        for entry in entries:
            case_id, item_id = entry.get("case"), entry.get("item")
            if item_id is not None:
                row = (
                    self._reader()
                    .execute(
                        "SELECT case_id, number FROM items WHERE id = ? AND state = 'active'",
                        (int(item_id),),
                    )
                    .fetchone()
                )
                if row is not None:
                    self.withdraw_item(row[0], row[1], actor=actor, ledger=False)
                    applied += 1
            elif case_id is not None:
                case = self.get_case_by_id(int(case_id))
                if case is not None and (case.state == CaseState.ACTIVE or case.item_count):
                    self.withdraw_case(case.id, actor=actor, ledger=False)
                    applied += 1
        return applied

    def read_ledger(self) -> list[dict[str, Any]]:
        """Every entry of this folder's withdrawal ledger (empty if there is none)."""
        try:
            text = self.ledger_path.read_text()
        except FileNotFoundError:
            return []
        # A crash mid-append can leave a last partial line: skip what does not parse.
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def _purge_wal(self) -> bool:
        """Copy the WAL into the database file and truncate it; True when fully done.

        Deleted rows are zeroed in the database pages (secure_delete), but older WAL frames
        still hold the pages as they were until the WAL is reset. A reader in the middle of a
        long read (e.g. a start-up snapshot) holds the checkpoint back: rather than make the
        withdrawal wait for it, this gives up after a short wait, returns False, and retries
        every second in the background until it succeeds, when a snapshot closes, and once
        more on ``close``.
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
            done = bool(busy == 0)
            self._purge_pending = not done
            if not done and self._purge_timer is None:
                self._purge_timer = threading.Timer(1.0, self._retry_purge)
                self._purge_timer.daemon = True
                self._purge_timer.start()
        return done

    def _retry_purge(self) -> None:
        with self._write_lock:
            self._purge_timer = None
        self._purge_wal()

    # -- failed victim guesses

    def guess_failures(self, keys: Sequence[bytes], *, since: int) -> dict[bytes, dict[int, int]]:
        """Failures per key and bucket from ``since`` on (see ``GuessStore``)."""
        if not keys:
            return {}
        # A handful of keys (address, case, overall): one placeholder each.
        rows = (
            self._reader()
            .execute(
                "SELECT key, bucket, failures FROM guess_failures WHERE bucket >= ? AND key IN "
                f"({','.join('?' * len(keys))})",
                (since, *[bytes(k) for k in keys]),
            )
            .fetchall()
        )
        out: dict[bytes, dict[int, int]] = {}
        for key, bucket, failures in rows:
            out.setdefault(bytes(key), {})[int(bucket)] = int(failures)
        return out

    def add_guess_failure(self, keys: Sequence[bytes], *, bucket: int, prune_before: int) -> None:
        """Count one failure per key in ``bucket``, prune old buckets (see ``GuessStore``)."""
        with self._write() as w:
            w.execute("DELETE FROM guess_failures WHERE bucket < ?", (prune_before,))
            w.executemany(
                "INSERT INTO guess_failures(key, bucket, failures) VALUES (?, ?, 1) "
                "ON CONFLICT (key, bucket) DO UPDATE SET failures = failures + 1",
                [(bytes(k), bucket) for k in sorted(set(keys))],
            )

    # -- probing counts (``ProbeStore``)

    def record_probes(
        self, key_id: int, record: ProbeRecord, *, now: int, near_since: int, edge_since: int
    ) -> ProbeTally:
        """Check and record one request's hits (see ``ProbeStore``): one write transaction,
        so every other writer (another process on the folder too) waits for it."""
        key_id, now = int(key_id), int(now)
        with self._write(durable=False) as w:
            # Inside the write transaction: nobody adds the row between the read and the insert.
            row = w.execute(
                "SELECT throttled_until FROM probe_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            if row is None:
                w.execute("INSERT INTO probe_keys(key_id) VALUES (?)", (key_id,))
                row = (0,)
            (throttled,) = row
            touched = 0
            if record.near:
                first, second = _near_halves(record)
                held = {
                    int(d): (int(n), int(a), int(b))
                    for d, n, a, b in w.execute(
                        # Named indexes: without statistics SQLite would rather walk
                        # the key's whole primary-key range (every row of the key).
                        "SELECT digest, touches, half0, half1 FROM probe_near "
                        "INDEXED BY probe_near_half0 WHERE key_id = ? AND at >= ? "
                        "AND half0 IN (SELECT value FROM json_each(?)) UNION ALL "
                        "SELECT digest, touches, half0, half1 FROM probe_near "
                        "INDEXED BY probe_near_half1 "
                        "WHERE key_id = ? AND at >= ? "
                        "AND half1 IN (SELECT value FROM json_each(?))",
                        (
                            key_id,
                            near_since,
                            _ints_json(first),
                            key_id,
                            near_since,
                            _ints_json(second),
                        ),
                    )
                }
                fresh, again = _near_rows(record, held)
                touched = sum(n for _, n, _, _ in fresh) + len(again)
                if fresh:
                    w.executemany(
                        "INSERT INTO probe_near(key_id, digest, touches, at, half0, half1) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key_id, digest) DO UPDATE SET "
                        "touches = excluded.touches, at = excluded.at",
                        [(key_id, d, n, now, a, b) for d, n, a, b in fresh],
                    )
                if again:
                    w.executemany(
                        "UPDATE probe_near SET touches = touches + 1, at = ? "
                        "WHERE key_id = ? AND digest = ?",
                        [(now, key_id, d) for d in again],
                    )
            (near_count,) = w.execute(
                "SELECT coalesce(sum(touches), 0) FROM probe_near "
                "WHERE key_id = ? AND touches > 0 AND at >= ?",
                (key_id, near_since),
            ).fetchone()
            items: dict[int, tuple[int, int, bool]] = {}
            if record.hits:
                slots = sorted({int(i) for i, _, _ in record.hits})
                held_hits = {
                    (int(i), int(d)): bool(e)
                    for i, d, e in w.execute(
                        "SELECT item, digest, edge FROM probe_hits WHERE key_id = ? AND at >= ? "
                        "AND item IN (SELECT value FROM json_each(?)) "
                        "AND digest IN (SELECT value FROM json_each(?))",
                        (
                            key_id,
                            edge_since,
                            _json_ids(slots),
                            _json_ids(sorted({int(d) for _, d, _ in record.hits})),
                        ),
                    )
                }
                changed, grown = _hit_rows(record, held_hits)
                if changed:
                    w.executemany(
                        "INSERT INTO probe_hits(key_id, item, digest, edge, at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key_id, item, digest) DO UPDATE "
                        "SET edge = excluded.edge, at = excluded.at",
                        [(key_id, i, d, int(e), now) for (i, d), e in changed.items()],
                    )
                for item, spread, edge in w.execute(
                    "SELECT item, count(*), sum(edge) FROM probe_hits WHERE key_id = ? "
                    "AND item IN (SELECT value FROM json_each(?)) AND at >= ? GROUP BY item",
                    (key_id, _json_ids(slots), edge_since),
                ):
                    items[int(item)] = (int(edge), int(spread), int(item) in grown)
        return ProbeTally(int(near_count), touched, items, int(throttled))

    def throttle_probes(
        self, key_id: int, until: int, *, actor: Principal, detail: dict[str, object]
    ) -> None:
        """Throttle the key until ``until`` and audit it (see ``ProbeStore``)."""
        with self._write() as w:
            w.execute(
                "INSERT INTO probe_keys(key_id, throttled_until) VALUES (?, ?) "
                "ON CONFLICT(key_id) DO UPDATE SET "
                "throttled_until = max(throttled_until, excluded.throttled_until)",
                (int(key_id), int(until)),
            )
            self._audit(w, actor, Action.MATCH_PROBE, detail=detail)

    def reset_probes(self, key_id: int) -> None:
        """Forget the key's probing counts and throttle (see ``ProbeStore``)."""
        with self._write() as w:
            for table in ("probe_near", "probe_hits", "probe_keys"):
                w.execute(f"DELETE FROM {table} WHERE key_id = ?", (int(key_id),))

    def trim_probes(self, *, near_before: int, edge_before: int) -> int:
        """Delete probing rows older than their windows (see ``ProbeStore``)."""
        with self._write() as w:
            gone = w.execute("DELETE FROM probe_near WHERE at < ?", (int(near_before),)).rowcount
            gone += w.execute("DELETE FROM probe_hits WHERE at < ?", (int(edge_before),)).rowcount
            gone += w.execute(
                "DELETE FROM probe_keys WHERE throttled_until < ?", (int(near_before),)
            ).rowcount
        return int(gone)

    # -- matching

    def active_items(self, item_ids: Sequence[int]) -> set[int]:
        """The ids among ``item_ids`` of active items that are not quarantined (one query for
        any number of ids)."""
        if len(item_ids) == 0:
            return set()
        rows = self._reader().execute(
            "SELECT id FROM items WHERE id IN (SELECT value FROM json_each(?)) "
            "AND state = 'active' "
            "AND NOT EXISTS (SELECT 1 FROM quarantines q WHERE q.item_id = items.id)",
            (_json_ids(item_ids),),
        )
        return {r[0] for r in rows.fetchall()}

    def record_feedback(
        self,
        item_id: int,
        correct: bool,
        *,
        actor: Principal,
        reason: ReportReason | None = None,
        quarantine_after: int | None = None,
    ) -> Quarantine | None:
        """Record the key's current verdict on an active item (see ``MatchStore``)."""
        if actor.key_id is None:
            raise InvalidInput("a verdict is given with a partner's API key", field="actor")
        now = _now_ms()
        verdict = "correct" if correct else "wrong"
        with self._write() as w:
            row = w.execute(
                "SELECT case_id, number, reviewed_at FROM items WHERE id = ? AND state = 'active'",
                (item_id,),
            ).fetchone()
            if row is None:
                raise NotFound("no such match (it may have been withdrawn)")
            # A verdict written after a review counts as after it, even within the review's
            # millisecond or from a replica whose clock is behind: writes on one item are
            # serialised, so their order is the truth, not the clocks.
            at = now if row[2] is None else max(now, int(row[2]) + 1)
            held = w.execute(
                "SELECT verdict FROM verdicts WHERE item_id = ? AND key_id = ?",
                (item_id, actor.key_id),
            ).fetchone()
            w.execute(
                "INSERT INTO verdicts(item_id, key_id, verdict, reason, at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(item_id, key_id) DO UPDATE SET verdict = excluded.verdict, "
                "reason = excluded.reason, at = excluded.at",
                (item_id, actor.key_id, verdict, None if reason is None else str(reason), at),
            )
            # The counts stay those of the current verdicts: a changed verdict moves from one
            # column to the other, a repeated one changes nothing (a v3 folder's anonymous
            # counts, with no verdict rows behind them, are kept as they were).
            if held is None:
                w.execute(
                    f"UPDATE items SET reported_{verdict} = reported_{verdict} + 1 WHERE id = ?",
                    (item_id,),
                )
            elif held[0] != verdict:
                w.execute(
                    f"UPDATE items SET reported_{verdict} = reported_{verdict} + 1, "
                    f"reported_{held[0]} = max(reported_{held[0]} - 1, 0) WHERE id = ?",
                    (item_id,),
                )
            w.execute(
                "INSERT INTO feedback(case_id, item_id, correct, actor, org_id, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row[0], item_id, int(correct), actor.audit_name, actor.org_id, now),
            )
            detail: dict[str, object] = {"item": row[1], "correct": bool(correct)}
            if reason is not None:
                detail["reason"] = str(reason)
            if held is not None:
                detail["replaced"] = True
            self._audit(w, actor, Action.MATCH_REPORT, case_id=row[0], detail=detail, at=now)
            if correct or quarantine_after is None:
                return None
            partners = int(
                w.execute(
                    "SELECT count(*) FROM verdicts WHERE item_id = ? AND verdict = 'wrong' "
                    "AND at > ?",
                    (item_id, -1 if row[2] is None else row[2]),
                ).fetchone()[0]
            )
            if partners < quarantine_after:
                return None
            return self._quarantine(
                w, item_id, row[0], row[1], QuarantineReason.REPORTS, partners, 0, now
            )

    def _quarantine(
        self,
        w: sqlite3.Connection,
        item_id: int,
        case_id: int,
        number: int,
        reason: QuarantineReason,
        partners: int,
        matches: int,
        now: int,
    ) -> Quarantine | None:
        """Open a quarantine on an active item unless one is open (then None), audited."""
        cur = w.execute(
            "INSERT INTO quarantines(item_id, reason, detail, since) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(item_id) DO NOTHING",
            (item_id, str(reason), _quarantine_detail(partners, matches), now),
        )
        if cur.rowcount != 1:
            return None
        self._audit(
            w,
            Principal.operator(str(reason)),
            Action.ITEM_QUARANTINE,
            case_id=case_id,
            detail={
                "item": number,
                "reason": str(reason),
                "partners": partners,
                "matches": matches,
            },
            at=now,
        )
        return Quarantine(reason, _dt_required(now), partners=partners, matches=matches)

    def quarantine_item(
        self, item_id: int, reason: QuarantineReason, *, matches: int = 0
    ) -> Quarantine | None:
        """Quarantine an active item (flood control); see ``MatchStore``."""
        now = _now_ms()
        with self._write() as w:
            row = w.execute(
                "SELECT case_id, number, reviewed_at FROM items WHERE id = ? AND state = 'active'",
                (item_id,),
            ).fetchone()
            if row is None or (reason is QuarantineReason.FLOOD and row[2] is not None):
                return None
            return self._quarantine(w, item_id, row[0], row[1], reason, 0, matches, now)

    def item_verdicts(self, item_ids: Sequence[int]) -> list[VerdictRecord]:
        """The current verdicts on ``item_ids``, by item then key."""
        rows = self._reader().execute(
            "SELECT item_id, key_id, verdict, reason, at FROM verdicts "
            "WHERE item_id IN (SELECT value FROM json_each(?)) ORDER BY item_id, key_id",
            (_json_ids(item_ids),),
        )
        return [_verdict(r) for r in rows.fetchall()]

    def review_queue(self, org_id: int | None = None) -> list[ReviewEntry]:
        """Quarantined active items (of one organisation, or all), oldest quarantine first."""
        where, args = ("AND c.org_id = ?", (org_id,)) if org_id is not None else ("", ())
        rows = self._reader().execute(_QUEUE_SQL.format(where=where), args)
        return [_queue_entry(r) for r in rows.fetchall()]

    def restore_item(
        self, case_id: int, number: int, *, actor: Principal, note: str = ""
    ) -> ItemRecord:
        """Lift an item's quarantine after review (see ``MatchStore``)."""
        now = _now_ms()
        with self._write() as w:
            row = w.execute(
                "SELECT i.id, q.reason FROM items i LEFT JOIN quarantines q ON q.item_id = i.id "
                "WHERE i.case_id = ? AND i.number = ? AND i.state = 'active'",
                (case_id, number),
            ).fetchone()
            if row is None:
                raise NotFound("no such item")
            if row[1] is None:
                raise Conflict("the item is not quarantined")
            w.execute("DELETE FROM quarantines WHERE item_id = ?", (row[0],))
            # The review covers every verdict given before it, whatever the clock of the
            # replica that wrote them said (verdicts after it are stamped later, above).
            (latest,) = w.execute(
                "SELECT coalesce(max(at), 0) FROM verdicts WHERE item_id = ?", (row[0],)
            ).fetchone()
            w.execute(
                "UPDATE items SET reviewed_at = ? WHERE id = ?", (max(now, int(latest)), row[0])
            )
            detail: dict[str, object] = {"item": number, "decision": "restore", "reason": row[1]}
            if note:
                detail["note"] = note
            self._audit(w, actor, Action.ITEM_REVIEW, case_id=case_id, detail=detail, at=now)
            return self._items_by_id(w, [row[0]])[row[0]]

    def add_match_counts(self, bucket: int, counts: Mapping[int, int]) -> None:
        """Add ``counts`` (item id -> uploads) to hour ``bucket`` (see ``MatchStore``)."""
        if not counts:
            return
        with self._write() as w:
            w.executemany(
                "INSERT INTO match_counts(item_id, bucket, matches) VALUES (?, ?, ?) "
                "ON CONFLICT(item_id, bucket) DO UPDATE SET matches = matches + excluded.matches",
                [(int(i), int(bucket), int(n)) for i, n in counts.items()],
            )

    def trim_match_counts(self, before: int) -> int:
        """Delete the counts of hour buckets before ``before`` (see ``MatchStore``)."""
        with self._write() as w:
            cur = w.execute("DELETE FROM match_counts WHERE bucket < ?", (int(before),))
            return int(cur.rowcount)

    def match_counts(self, item_ids: Sequence[int], since: int) -> dict[int, dict[int, int]]:
        """Per item of ``item_ids``, its hour buckets from ``since`` on (see ``MatchStore``)."""
        rows = self._reader().execute(
            "SELECT item_id, bucket, matches FROM match_counts "
            "WHERE item_id IN (SELECT value FROM json_each(?)) AND bucket >= ?",
            (_json_ids(item_ids), int(since)),
        )
        out: dict[int, dict[int, int]] = {}
        for item_id, bucket, matches in rows.fetchall():
            out.setdefault(int(item_id), {})[int(bucket)] = int(matches)
        return out

    def match_norm(self, since: int, until: int) -> float:
        """Mean matches per (item, hour) row of buckets ``since <= b < until`` (0 if none)."""
        row = (
            self._reader()
            .execute(
                "SELECT avg(matches) FROM match_counts WHERE bucket >= ? AND bucket < ?",
                (int(since), int(until)),
            )
            .fetchone()
        )
        return float(row[0] or 0.0)

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
                    w,
                    actor,
                    Action.KEY_CREATE,
                    detail={"key_id": key_id, "role": str(role)},
                    at=now,
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
            exists = w.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
            if exists is None:
                raise NotFound("no such API key")
            if cur.rowcount:
                self._audit(w, actor, Action.KEY_REVOKE, detail={"key_id": key_id}, at=now)
        return _key(exists)

    # Key policies live in ``meta`` (one JSON row per key, ``key_policy:{id}``), so they needed
    # no schema change: few keys ever get one, and it is read only when a key is (re)cached.

    def key_policy(self, key_id: int) -> KeyPolicy:
        """The key's policy, or the default one, with its probing throttle."""
        row = (
            self._reader()
            .execute(
                "SELECT (SELECT value FROM meta WHERE key = ?), "
                "(SELECT throttled_until FROM probe_keys WHERE key_id = ?)",
                (f"key_policy:{key_id}", int(key_id)),
            )
            .fetchone()
        )
        return _with_throttle(KeyPolicy() if row[0] is None else _policy_from_json(row[0]), row[1])

    def set_key_policy(
        self,
        key_id: int,
        policy: KeyPolicy,
        *,
        actor: Principal,
        action: str,
        detail: dict[str, object] | None = None,
    ) -> KeyPolicy:
        """Replace the key's policy and audit it, in one transaction."""
        now = _now_ms()
        with self._write() as w:
            if w.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone() is None:
                raise NotFound("no such API key")
            w.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (f"key_policy:{key_id}", _policy_to_json(policy)),
            )
            self._audit(
                w, actor, Action(action), detail={"key_id": key_id, **(detail or {})}, at=now
            )
        return policy

    def record_audit(
        self,
        action: str,
        *,
        actor: Principal,
        case_id: int | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        """One audit row on its own."""
        with self._write() as w:
            self._audit(w, actor, Action(action), case_id=case_id, detail=detail)

    # -- the allowlist

    @staticmethod
    def _bump_allowlist(w: sqlite3.Connection) -> int:
        # One writer at a time: read and write in the same transaction is enough.
        row = w.execute("SELECT value FROM meta WHERE key = 'allowlist_version'").fetchone()
        version = (int(bytes(row[0]).decode()) if row else 0) + 1
        w.execute(
            "INSERT INTO meta(key, value) VALUES ('allowlist_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(version).encode(),),
        )
        return version

    @staticmethod
    def _read_allowlist_version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'allowlist_version'").fetchone()
        return int(bytes(row[0]).decode()) if row else 0

    def _insert_allowlist(
        self, w: sqlite3.Connection, entries: Sequence[tuple[Hash, str]], source: str, now: int
    ) -> tuple[list[AllowlistEntry], int]:
        created = []
        for h, label in entries:
            cur = w.execute(
                "INSERT INTO allowlist(signal, value, label, source, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(signal, value) DO NOTHING",
                (h.signal.name, h.value, label, source, now),
            )
            if cur.rowcount:
                created.append(
                    AllowlistEntry(
                        int(cur.lastrowid or 0),
                        h.signal.name,
                        label,
                        AllowlistSource(source),
                        _dt_required(now),
                    )
                )
        return created, len(entries) - len(created)

    def add_allowlist_entries(
        self,
        hashes: Sequence[Hash],
        *,
        label: str,
        source: AllowlistSource,
        actor: Principal,
    ) -> AllowlistAdded:
        """Add hashes to the allowlist (held ones are not added again), audited."""
        unique = _allowlist_news(hashes)
        now = _now_ms()
        with self._write() as w:
            created, _ = self._insert_allowlist(
                w, [(h, label) for h in unique], str(AllowlistSource(source)), now
            )
            version = self._bump_allowlist(w) if created else self._read_allowlist_version(w)
            detail = {"added": len(created), "existing": len(hashes) - len(created)}
            self._audit(
                w,
                actor,
                Action.ALLOWLIST_ADD,
                detail={**detail, "label": label, "source": str(source)},
                at=now,
            )
        return AllowlistAdded(created, len(hashes) - len(created), version)

    def seed_allowlist(
        self,
        entries: Sequence[tuple[Hash, str]],
        *,
        actor: Principal,
        again: bool = False,
    ) -> AllowlistAdded | None:
        """Add the seed once (or ``again``), audited; None when it was seeded before."""
        now = _now_ms()
        with self._write() as w:
            cur = w.execute(
                "INSERT INTO meta(key, value) VALUES ('allowlist_seeded', ?) "
                "ON CONFLICT(key) DO NOTHING",
                (str(now).encode(),),
            )
            if not cur.rowcount and not again:
                return None
            created, existing = self._insert_allowlist(w, entries, "seed", now)
            version = self._bump_allowlist(w) if created else self._read_allowlist_version(w)
            self._audit(
                w,
                actor,
                Action.ALLOWLIST_SEED,
                detail={"added": len(created), "existing": existing},
                at=now,
            )
        return AllowlistAdded(created, existing, version)

    def list_allowlist(self) -> list[AllowlistEntry]:
        """Every entry, by id, without values."""
        rows = self._reader().execute(f"SELECT {_ALLOWLIST_COLUMNS} FROM allowlist ORDER BY id")
        return [_allowlist_entry(r) for r in rows.fetchall()]

    def remove_allowlist_entry(self, entry_id: int, *, actor: Principal) -> AllowlistEntry:
        """Delete one entry (``NotFound`` if none), bump the version, audited."""
        with self._write() as w:
            row = w.execute(
                f"SELECT {_ALLOWLIST_COLUMNS} FROM allowlist WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                raise NotFound("no such allowlist entry")
            w.execute("DELETE FROM allowlist WHERE id = ?", (entry_id,))
            self._bump_allowlist(w)
            entry = _allowlist_entry(row)
            self._audit(
                w,
                actor,
                Action.ALLOWLIST_REMOVE,
                detail={"entry": entry_id, "label": entry.label, "source": str(entry.source)},
            )
        return entry

    def allowlist_version(self) -> int:
        """The allowlist's version (one read of ``meta``)."""
        return self._read_allowlist_version(self._reader())

    def allowlist_codes(self) -> AllowlistCodes:
        """Every value with its entry id, and the version, in one read transaction."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            version = self._read_allowlist_version(conn)
            rows = conn.execute("SELECT id, signal, value FROM allowlist ORDER BY id").fetchall()
        finally:
            conn.execute("COMMIT")
        return AllowlistCodes(version, _allowlist_chunks(rows))

    # -- loading and following

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[SQLiteSnapshot]:
        """A consistent read of all hashes and the change-log position it includes.

        Uses its own connection: the read transaction stays open while the caller iterates,
        and must not hold a thread's shared reader connection. A WAL purge the long read held
        back is finished when it closes.
        """
        if self._closed:
            raise Unavailable("the store is closed")
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            # The first SELECT fixes the snapshot; every read below sees the same state.
            # sqlite_sequence keeps the highest seq ever given, even once trimmed.
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
            position = int((seq.fetchone() or (0,))[0])
            counts = self._signal_counts(conn)
            yield SQLiteSnapshot(str(position), counts, conn, self._cipher)
            conn.execute("COMMIT")
        finally:
            conn.close()
            if self._purge_pending:
                self._purge_wal()

    def _trimmed_through(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'changes_trimmed_through'")
        found = row.fetchone()
        return 0 if found is None else int(found[0])

    def changes_since(self, position: str, *, limit: int = 10_000) -> ChangeBatch:
        """Changes committed after ``position``, oldest first (see ``ChangeFeed``)."""
        seq = _parse_position(position)
        conn = self._reader()
        # One read transaction: the trim mark and the rows agree.
        conn.execute("BEGIN")
        try:
            if seq < self._trimmed_through(conn):
                raise Conflict("the change log was trimmed past this position: reload")
            rows = conn.execute(
                "SELECT seq, op, item_id, hash_count FROM changes WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        changes = [Change(op, int(item), int(n)) for _, op, item, n in rows]
        last = int(rows[-1][0]) if rows else seq
        return ChangeBatch(changes, str(last), more=len(rows) == limit)

    def item_codes(self, item_ids: Sequence[int]) -> list[CodeChunk]:
        """Codes and entry ids of the still-active items among ``item_ids``, per signal type."""
        if len(item_ids) == 0:
            return []
        rows = self._reader().execute(
            "SELECT item_id, sealed FROM item_codes WHERE item_id IN "
            "(SELECT value FROM json_each(?)) ORDER BY item_id",
            (_json_ids(item_ids),),
        )
        return list(_codes_by_signal(self._cipher, rows.fetchall()))

    def trim_changes(self, before: str) -> int:
        """Delete the changes up to position ``before`` (once every follower is past it)."""
        seq = _parse_position(before)
        with self._write() as w:
            cur = w.execute("DELETE FROM changes WHERE seq <= ?", (seq,))
            w.execute(
                "INSERT INTO meta(key, value) VALUES ('changes_trimmed_through', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                (seq,),
            )
        return cur.rowcount
