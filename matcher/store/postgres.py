"""The PostgreSQL store: one database shared by several ``matcher serve`` replicas.

Opened by ``open_store("postgresql://user@host/db")`` (psycopg 3, ``pip install
matcher[postgres]``). It keeps every promise of ``matcher.store.base``; the points where
PostgreSQL needs its own means:

- **Acknowledged means committed.** Every connection runs with ``synchronous_commit = on``
  (set by the store, whatever the server's default), so a commit returns only once its WAL
  is flushed. Connections come from a pool (``psycopg_pool``); each write is one transaction
  on one connection.
- **Concurrent writers.** Each write that touches a case first locks the case row
  (``SELECT ... FOR UPDATE``): writes to one case are serialised (item numbers, the
  fingerprint check), writes to different cases run in parallel. The lock is the transaction's
  first write, so it also takes its transaction id: two writes to one case get transaction ids
  in commit order, which keeps an item's "remove" after its "add" in the log's order.
  ``signal_counts`` rows are updated in one fixed order, so two enrollments never deadlock.

Positions (the rule of ``matcher.store.base``). A change row carries its transaction's id
(``xid8``). Sequence values are handed out before commit, so ``seq`` alone is not commit
order: a reader that remembered "the highest seq so far" would skip, for ever, a row of a
slower transaction that committed a moment later with a lower seq. Instead, the log is read in
``(xid, seq)`` order and only below the **horizon**, the oldest transaction id still running
(``pg_snapshot_xmin(pg_current_snapshot())``): every transaction below it has finished, and
transaction ids only grow, so no row can ever appear below the horizon after it was read. A
position is ``"xid:seq"``, the last row handed out when a batch was cut at its limit, else
``"horizon:0"`` ("everything below the horizon"). The cost: a long transaction anywhere in the
cluster that holds a transaction id (not a plain read) holds every follower back until it ends
(the lag metric shows it); matcher's own writes are short.

Notifications: every write that adds to the log sends ``NOTIFY matcher_changes`` (delivered
at commit), and ``wait_for_changes`` waits for one, so replicas follow within milliseconds
instead of polling. The notification only wakes a follower: the log is the truth, and a
follower also polls (a notification can be lost with its connection).

Sealed at rest (schema 3, as SQLite): an item's codes are one AES-GCM blob
(``matcher.store.crypto``) in ``item_codes``, the secret key is stored wrapped, and the key is
outside the database (``MATCHER_STORE_KEY``, or a key file: the same keyring on every
replica). No hash value is ever in the cluster's files, its WAL or a dump in clear.
Withdrawal deletes the item's blob in the withdrawing transaction and the store runs
``VACUUM`` on the table afterwards (in the background, one at a time). PostgreSQL has no
``secure_delete``: a withdrawn item's sealed blob may linger in free page space or an older
WAL segment until overwritten, still sealed. ``matcher backup`` / ``restore`` are SQLite's (a
PostgreSQL database is backed up with PostgreSQL's own tools); the withdrawal ledger is a file
per replica (``ledger``, ``matcher.store.ledger``), re-applied to a restored database by
``matcher ledger apply``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.audit import Action, encode_detail
from matcher.credentials import item_fingerprint
from matcher.errors import Conflict, InvalidInput, NotFound, Unavailable
from matcher.principal import Principal, Role
from matcher.records import (
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
from matcher.store import ledger as ledger_file
from matcher.store.base import AddedItems, ProbeRecord, ProbeTally
from matcher.store.crypto import KEY_FILE_ENV, ItemCipher, Keyring, load_keyring
from matcher.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from matcher.store.sqlite import (
    _ALLOWLIST_COLUMNS,
    _QUARANTINE_COLUMNS,
    _QUEUE_SQL,
    _allowlist_chunks,
    _allowlist_entry,
    _allowlist_news,
    _case,
    _codes_by_signal,
    _dt_required,
    _hit_rows,
    _item,
    _key,
    _near_halves,
    _near_rows,
    _now_ms,
    _policy_from_json,
    _policy_to_json,
    _quarantine_detail,
    _queue_entry,
    _signal_dict,
    _unique_hashes,
    _verdict,
    _with_throttle,
)

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "the PostgreSQL store needs psycopg 3: pip install 'matcher[postgres]'"
    ) from exc

__all__ = ["CHANNEL", "SCHEMA_VERSION", "PostgresSnapshot", "PostgresStore"]

CHANNEL = "matcher_changes"
"""The NOTIFY channel every write to the change log signals on."""

_CHUNK_ROWS = 1 << 16
_BLOCK_ITEMS = 512
_SEALED_FROM = 3  # the first schema version whose values are sealed
_MIGRATE_LOCK = 0x6D61746368  # any constant: one advisory lock for migrations

_CASE_SQL = (
    "SELECT c.id, c.number, c.org_id, c.state, c.secret_hash, "
    "count(i.id) FILTER (WHERE i.state = 'active'), "
    "coalesce(sum(i.hash_count) FILTER (WHERE i.state = 'active'), 0), "
    "coalesce(sum(i.reported_correct), 0), coalesce(sum(i.reported_wrong), 0), "
    "c.created_at, c.withdrawn_at "
    "FROM cases c LEFT JOIN items i ON i.case_id = c.id WHERE c.{column} = %s GROUP BY c.id"
)
_ITEM_COLUMNS = (
    "id, case_id, number, kind, state, label, hash_count, signals, reported_correct, "
    "reported_wrong, created_at, withdrawn_at, " + _QUARANTINE_COLUMNS
)
_KEY_COLUMNS = "id, name, role, org_id, prefix, created_at, revoked_at"

# One block of the start-up scan: sealed items in id order (one blob per item).
_BLOCK_SQL = "SELECT item_id, sealed FROM item_codes WHERE item_id > %s ORDER BY item_id LIMIT %s"

Position = tuple[int, int]


def _parse_position(position: str) -> Position:
    if position == "":
        return (0, 0)
    xid, sep, seq = position.partition(":")
    if not sep or not (xid.isascii() and xid.isdigit() and seq.isascii() and seq.isdigit()):
        raise InvalidInput("not a change-log position of this store", field="position")
    return (int(xid), int(seq))


def _format_position(position: Position) -> str:
    return f"{position[0]}:{position[1]}"


@dataclass
class PostgresSnapshot:
    """A consistent read of every hash row (see ``Snapshot`` in ``matcher.store.base``)."""

    position: str
    counts: dict[str, int]
    _conn: psycopg.Connection[Any]
    _cipher: ItemCipher

    @property
    def total(self) -> int:
        """Number of hashes in the snapshot."""
        return sum(self.counts.values())

    def chunks(self, rows: int = _CHUNK_ROWS) -> Iterator[CodeChunk]:
        """Yield every stored hash in blocks of whole items (see ``Snapshot.chunks``)."""
        last = -1
        items = max(1, min(_BLOCK_ITEMS, rows // 128))
        while True:
            block = self._conn.execute(_BLOCK_SQL, (last, items)).fetchall()
            if not block:
                break
            yield from _codes_by_signal(self._cipher, [(int(i), bytes(b)) for i, b in block])
            last = int(block[-1][0])


class PostgresStore:
    """The PostgreSQL store (see the module docstring). Safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        keyring: Keyring | None = None,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,
        ledger: str | os.PathLike[str] | None = None,
    ) -> None:
        """Connect to ``url`` (a libpq URL), create or migrate the schema, read the key.

        The store key (``matcher.store.crypto``) is ``keyring`` if given, else
        ``MATCHER_STORE_KEY``, else ``key_file`` (default ``MATCHER_KEY_FILE``); there is no
        default file (a database has no folder to put it beside), and every replica must use
        the same keyring. A new database gets a new key file when a path is given; a sealed
        database whose key is missing is refused with ``Unavailable``. ``timeout`` is how long
        a call waits for a free connection (or the server) before ``Unavailable``;
        ``max_connections`` is the pool's size (``matcher serve --pool-size``). ``ledger`` is
        this replica's withdrawal ledger file (``matcher.store.ledger``; None: no ledger).
        """
        self.url = url
        self.ledger_path = None if ledger is None else Path(ledger)
        self._closed = False
        self._vacuum_lock = threading.Lock()
        self._vacuum_pending = False
        self._listener: psycopg.Connection[Any] | None = None
        self._listener_lock = threading.Lock()
        try:
            self._pool = ConnectionPool(
                url,
                min_size=min_connections,
                max_size=max_connections,
                timeout=timeout,
                kwargs={"autocommit": True, "options": "-c synchronous_commit=on"},
                open=True,
                name="matcher-store",
            )
            self._pool.wait(timeout)
        except (psycopg.Error, PoolTimeout) as exc:
            raise Unavailable(f"cannot connect to the PostgreSQL store: {_reason(exc)}") from exc
        if key_file is None:
            key_file = os.environ.get(KEY_FILE_ENV) or None
        try:
            if keyring is None:
                keyring = load_keyring(key_file, create=self._stored_version() < _SEALED_FROM)
            self._cipher = ItemCipher(keyring)
            self._migrate()
            self._key = self._ensure_secret_key()
        except BaseException:
            self._pool.close()
            raise

    # -- connections and transactions

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: each statement is its own transaction)."""
        if self._closed:
            raise Unavailable("the store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable("the store is busy; retry later") from exc
        except pg_errors.UniqueViolation:
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise Unavailable(f"the store failed: {_reason(exc)}; retry later") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """One write transaction: commits on success (durably: synchronous_commit), rolls
        back on any exception. Nothing is acknowledged unless COMMIT returned."""
        with self._conn() as conn, conn.transaction():
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        """One consistent read of several statements (REPEATABLE READ, read only)."""
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    def close(self) -> None:
        """Close every connection; the store is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        with self._vacuum_lock:
            self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema and key

    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        with self._conn() as conn:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    def _stored_version(self) -> int:
        with self._conn() as conn:
            if conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,):
                return 0
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    @property
    def cipher(self) -> ItemCipher:
        """The store's cipher (its keyring)."""
        return self._cipher

    def _migrate(self) -> None:
        with self._conn() as conn:
            # A session lock across the whole migration: replicas starting together wait here
            # and then find the work done.
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
                )
                row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                current = int(row[0] or 0) if row else 0
                if current > len(MIGRATIONS):
                    raise Unavailable(
                        f"the database has schema version {current}, newer than this matcher "
                        f"({len(MIGRATIONS)}): upgrade matcher"
                    )
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    with conn.transaction():
                        step = MIGRATIONS[version - 1]
                        if callable(step):
                            step(conn, self._cipher)
                        else:
                            for statement in step:
                                conn.execute(statement)
                        conn.execute(
                            "INSERT INTO schema_version VALUES (%s, %s)", (version, _now_ms())
                        )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))

    def _ensure_secret_key(self) -> bytes:
        """The store's secret key, made on first open and stored wrapped by the store key, so
        opening it also checks that the keyring fits this database."""
        with self._write() as w:
            w.execute(
                "INSERT INTO meta(key, value) VALUES ('secret_key', %s) ON CONFLICT DO NOTHING",
                (self._cipher.seal_secret("secret_key", os.urandom(32)),),
            )
            row = w.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
        assert row is not None
        try:
            return self._cipher.open_secret("secret_key", bytes(row[0]))
        except Unavailable as exc:
            raise Unavailable(
                f"the store key ({self._cipher.ring.source or 'given'}) does not open this "
                f"database: {exc}"
            ) from None

    def secret_key(self) -> bytes:
        """The store's random key (item ids, fingerprints): one for every replica."""
        return self._key

    # -- audit

    @staticmethod
    def _audit(
        conn: psycopg.Connection[Any],
        actor: Principal,
        action: Action,
        *,
        case_id: int | None = None,
        detail: dict[str, object] | None = None,
        at: int | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit(at, actor, org_id, action, case_id, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
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
        """The most recent audit rows, newest first, optionally for one case."""
        sql = "SELECT id, at, actor, org_id, action, case_id, detail FROM audit WHERE true"
        args: list[object] = []
        if case_id is not None:
            sql += " AND case_id = %s"
            args.append(case_id)
        if before is not None:
            sql += " AND id < %s"
            args.append(before)
        with self._conn() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT %s", (*args, limit)).fetchall()
        return [
            AuditEntry(r[0], _dt_required(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in rows
        ]

    # -- organisations

    def create_organisation(self, name: str, *, actor: Principal) -> Organisation:
        """Create an organisation; ``Conflict`` if the name is taken."""
        now = _now_ms()
        try:
            with self._write() as w:
                row = w.execute(
                    "INSERT INTO organisations(name, created_at) VALUES (%s, %s) RETURNING id",
                    (name, now),
                ).fetchone()
                assert row is not None
                org_id = int(row[0])
                self._audit(w, actor, Action.ORG_CREATE, detail={"org_id": org_id}, at=now)
        except pg_errors.UniqueViolation:
            raise Conflict("an organisation with this name exists") from None
        return Organisation(org_id, name, _dt_required(now))

    def get_organisation(self, org_id: int) -> Organisation | None:
        """One organisation, or None."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT id, name, created_at FROM organisations WHERE id = %s", (org_id,)
            ).fetchone()
        return None if row is None else Organisation(row[0], row[1], _dt_required(row[2]))

    def list_organisations(self) -> list[Organisation]:
        """Every organisation, by id."""
        with self._conn() as conn:
            rows = conn.execute("SELECT id, name, created_at FROM organisations ORDER BY id")
            return [Organisation(r[0], r[1], _dt_required(r[2])) for r in rows.fetchall()]

    # -- cases

    def create_case(
        self, org_id: int, number: str, secret_hash: str, *, actor: Principal
    ) -> CaseRecord:
        """Create an active case; ``Conflict`` if the number is taken, ``NotFound`` for the org."""
        now = _now_ms()
        try:
            with self._write() as w:
                row = w.execute(
                    "INSERT INTO cases(number, org_id, state, secret_hash, created_at) "
                    "VALUES (%s, %s, 'active', %s, %s) RETURNING id",
                    (number, org_id, secret_hash, now),
                ).fetchone()
                assert row is not None
                case_id = int(row[0])
                self._audit(w, actor, Action.CASE_CREATE, case_id=case_id, at=now)
                record = self._case_by(w, "id", case_id)
        except pg_errors.ForeignKeyViolation:
            raise NotFound("no such organisation") from None
        except pg_errors.UniqueViolation:
            raise Conflict("a case with this number exists") from None
        assert record is not None
        return record

    @staticmethod
    def _case_by(conn: psycopg.Connection[Any], column: str, value: object) -> CaseRecord | None:
        row = conn.execute(_CASE_SQL.format(column=column), (value,)).fetchone()
        return None if row is None else _case(row)

    def get_case(self, number: str) -> CaseRecord | None:
        """The case with this number, or None."""
        with self._conn() as conn:
            return self._case_by(conn, "number", number)

    def get_case_by_id(self, case_id: int) -> CaseRecord | None:
        """The case with this id, or None."""
        with self._conn() as conn:
            return self._case_by(conn, "id", case_id)

    def list_items(self, case_id: int) -> list[ItemRecord]:
        """Every item of the case, withdrawn ones included, by number."""
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE case_id = %s ORDER BY number",
                (case_id,),
            ).fetchall()
        return [_item(r) for r in rows]

    def get_item(self, case_id: int, number: int) -> ItemRecord | None:
        """Item ``number`` of the case, or None."""
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE case_id = %s AND number = %s",
                (case_id, number),
            ).fetchone()
        return None if row is None else _item(row)

    def case_counts(self) -> dict[str, int]:
        """Number of cases per state."""
        with self._conn() as conn:
            rows = conn.execute("SELECT state, count(*) FROM cases GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

    def hash_counts(self) -> dict[str, int]:
        """Number of stored hashes per signal type (kept as counters: no scan)."""
        with self._conn() as conn:
            return self._signal_counts(conn)

    def item_count(self) -> int:
        """Number of active items."""
        with self._conn() as conn:
            row = conn.execute("SELECT count(*) FROM items WHERE state = 'active'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _signal_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
        rows = dict(
            conn.execute("SELECT signal, hashes FROM signal_counts WHERE hashes > 0").fetchall()
        )
        return {name: int(rows[name]) for name in SIGNALS if name in rows}

    @staticmethod
    def _lock_case(w: psycopg.Connection[Any], case_id: int) -> str:
        """Lock the case row (the transaction's first write: see the module docstring) and
        return its state; ``NotFound`` if there is no such case."""
        row = w.execute("SELECT state FROM cases WHERE id = %s FOR UPDATE", (case_id,)).fetchone()
        if row is None:
            raise NotFound("no such case")
        return str(row[0])

    @staticmethod
    def _count_signals(w: psycopg.Connection[Any], delta: Counter[str], sign: int) -> None:
        # Sorted: every transaction locks these rows in one order, so none deadlock.
        for name in sorted(delta):
            w.execute(
                "INSERT INTO signal_counts(signal, hashes) VALUES (%s, %s) "
                "ON CONFLICT (signal) DO UPDATE SET hashes = signal_counts.hashes + "
                "excluded.hashes",
                (name, sign * delta[name]),
            )

    # -- enrollment

    def add_items(self, case_id: int, items: Sequence[NewItem], *, actor: Principal) -> AddedItems:
        """Enroll ``items`` into an active case, all or none (see ``CaseStore.add_items``)."""
        if not items:
            raise InvalidInput("an enrollment needs at least one item", field="items")
        now = _now_ms()
        with self._write() as w:
            if self._lock_case(w, case_id) != CaseState.ACTIVE:
                raise Conflict("the case is withdrawn: open a new case to enroll again")
            top = w.execute("SELECT max(number) FROM items WHERE case_id = %s", (case_id,))
            number = int((top.fetchone() or (0,))[0] or 0)
            item_ids: list[int] = []
            created: list[bool] = []
            added: Counter[str] = Counter()
            for item in items:
                hashes = _unique_hashes(item.hashes)
                fingerprint = item_fingerprint(self._key, hashes)
                held = w.execute(
                    "SELECT id FROM items WHERE case_id = %s AND fingerprint = %s",
                    (case_id, fingerprint),
                ).fetchone()
                if held is not None:
                    item_ids.append(int(held[0]))
                    created.append(False)
                    continue
                number += 1
                signals = Counter(h.signal.name for h in hashes)
                row = w.execute(
                    "INSERT INTO items(case_id, number, kind, state, label, fingerprint, "
                    "hash_count, signals, created_at) "
                    "VALUES (%s, %s, %s, 'active', %s, %s, %s, %s, %s) RETURNING id",
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
                ).fetchone()
                assert row is not None
                item_id = int(row[0])
                w.execute(
                    "INSERT INTO item_codes(item_id, sealed) VALUES (%s, %s)",
                    (item_id, self._cipher.seal_item(item_id, hashes)),
                )
                w.execute(
                    "INSERT INTO changes(op, item_id, hash_count, at) VALUES ('add', %s, %s, %s)",
                    (item_id, len(hashes), now),
                )
                added.update(signals)
                item_ids.append(item_id)
                created.append(True)
            if added:
                self._count_signals(w, added, 1)
                w.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            detail: dict[str, object] = {n: added[n] for n in SIGNALS if n in added}
            detail.update(items=sum(created), existing=len(created) - sum(created))
            self._audit(w, actor, Action.CASE_ENROLL, case_id=case_id, detail=detail, at=now)
            records = self._items_by_id(w, item_ids)
            case = self._case_by(w, "id", case_id)
        assert case is not None
        return AddedItems([records[i] for i in item_ids], created, case)

    @staticmethod
    def _items_by_id(
        conn: psycopg.Connection[Any], item_ids: Sequence[int]
    ) -> dict[int, ItemRecord]:
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ANY(%s::bigint[])",
            ([int(i) for i in item_ids],),
        ).fetchall()
        return {r[0]: _item(r) for r in rows}

    # -- withdrawal

    def _withdraw_items(
        self, w: psycopg.Connection[Any], rows: Sequence[tuple[int, int, str]], now: int
    ) -> int:
        removed: Counter[str] = Counter()
        for item_id, hash_count, signals in rows:
            cur = w.execute("DELETE FROM item_codes WHERE item_id = %s", (item_id,))
            if cur.rowcount != (1 if hash_count else 0):
                raise RuntimeError("an item's sealed codes are missing")
            w.execute(
                "INSERT INTO changes(op, item_id, hash_count, at) VALUES ('remove', %s, %s, %s)",
                (item_id, hash_count, now),
            )
            # Open quarantines only: a withdrawn item has nothing left to review.
            w.execute("DELETE FROM quarantines WHERE item_id = %s", (item_id,))
            removed.update(_signal_dict(signals))
        if rows:
            with w.cursor() as cur:
                cur.executemany(
                    "UPDATE items SET state = 'withdrawn', withdrawn_at = %s, fingerprint = NULL, "
                    "label = NULL, hash_count = 0, signals = '{}' WHERE id = %s",
                    [(now, r[0]) for r in rows],
                )
            self._count_signals(w, removed, -1)
            w.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        return sum(removed.values())

    def withdraw_item(
        self, case_id: int, number: int, *, actor: Principal, ledger: bool = True
    ) -> ItemRecord:
        """Withdraw one item for good (see ``CaseStore.withdraw_item``)."""
        now = _now_ms()
        with self._write() as w:
            row = w.execute(
                "SELECT i.id, i.state, i.hash_count, i.signals FROM cases c JOIN items i "
                "ON i.case_id = c.id WHERE c.id = %s AND i.number = %s FOR UPDATE OF c",
                (case_id, number),
            ).fetchone()
            if row is None:
                raise NotFound("no such item")
            active = [(row[0], row[2], row[3])] if row[1] == ItemState.ACTIVE else []
            if active and ledger and self.ledger_path is not None:
                # Written under the case lock, before the commit (``matcher.store.ledger``).
                ledger_file.append(self.ledger_path, {"at": now, "case": case_id, "item": row[0]})
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
            self._vacuum_soon()
        return record

    def withdraw_case(self, case_id: int, *, actor: Principal, ledger: bool = True) -> CaseRecord:
        """Withdraw a case and all its items (see ``CaseStore.withdraw_case``)."""
        now = _now_ms()
        with self._write() as w:
            state = self._lock_case(w, case_id)
            active = w.execute(
                "SELECT id, hash_count, signals FROM items WHERE case_id = %s "
                "AND state = 'active' ORDER BY number",
                (case_id,),
            ).fetchall()
            if ledger and self.ledger_path is not None and (active or state == CaseState.ACTIVE):
                ledger_file.append(self.ledger_path, {"at": now, "case": case_id, "item": None})
            removed = self._withdraw_items(w, active, now)
            if state == CaseState.ACTIVE:
                w.execute(
                    "UPDATE cases SET state = 'withdrawn', withdrawn_at = %s WHERE id = %s",
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
            self._vacuum_soon()
        assert record is not None
        return record

    def raise_item_floor(self, item_id: int) -> None:
        """Make sure no item id up to ``item_id`` is given out again (after a restore to an
        earlier point, for ids the ledgers name that the restored database never saw)."""
        with self._write() as w:
            w.execute(
                "SELECT setval(s, greatest(%s, coalesce(pg_sequence_last_value(s), 1))) "
                "FROM CAST(pg_get_serial_sequence('items', 'id') AS regclass) AS s",
                (int(item_id),),
            )

    def rotate_key(self, ring: Keyring) -> int:
        """Seal every item's codes and the secret key again under ``ring``'s current key, in
        one transaction, as SQLite's ``rotate_key`` (``ring`` must still hold the keys the
        blobs are sealed with now); return the number of items resealed. Then this handle
        uses ``ring``.

        ``item_codes`` is locked against writes meanwhile (EXCLUSIVE: reads go on), so no
        replica enrolls or withdraws an item during the rotation; their writes wait for it.
        Replicas still running with the old keyring keep serving from their index and seal
        new items under the old key (which ``ring`` keeps); they need the new keyring before
        they can read an item sealed under the new key (README, "Deployment": the runbook).
        """
        cipher = ItemCipher(ring)
        done = 0
        with self._write() as w:
            w.execute("LOCK TABLE item_codes IN EXCLUSIVE MODE")
            last = -1
            while True:
                rows = w.execute(
                    "SELECT item_id, sealed FROM item_codes WHERE item_id > %s "
                    "ORDER BY item_id LIMIT 1000",
                    (last,),
                ).fetchall()
                if not rows:
                    break
                with w.cursor() as cur:
                    cur.executemany(
                        "UPDATE item_codes SET sealed = %s WHERE item_id = %s",
                        [
                            (cipher.reseal(bytes(sealed), cipher.item_context(int(i))), int(i))
                            for i, sealed in rows
                        ],
                    )
                done += len(rows)
                last = int(rows[-1][0])
            w.execute(
                "UPDATE meta SET value = %s WHERE key = 'secret_key'",
                (cipher.seal_secret("secret_key", self._key),),
            )
        self._cipher = cipher
        # The blobs under the old key are now only in dead row versions: vacuum them away.
        self._vacuum_soon()
        return done

    def reapply_withdrawals(self, entries: Sequence[dict[str, Any]], *, actor: Principal) -> int:
        """Withdraw again every item and case of ledger ``entries`` that is active here (as
        SQLite's, after a restore); return how many took effect (``matcher.store.ledger``)."""
        done = ledger_file.apply(self, entries, actor=actor)
        items = [int(e["item"]) for e in entries if e.get("item") is not None]
        if items:
            self.raise_item_floor(max(items))
        return done.count

    def _vacuum_soon(self) -> None:
        """Prune the withdrawn rows from the hash table's pages, in the background (one
        VACUUM at a time; a withdrawal meanwhile asks for one more run)."""
        self._vacuum_pending = True
        if not self._vacuum_lock.acquire(blocking=False):
            return

        def run() -> None:
            try:
                while self._vacuum_pending and not self._closed:
                    self._vacuum_pending = False
                    with contextlib.suppress(Exception), self._pool.connection() as conn:
                        conn.execute("VACUUM item_codes")
            finally:
                self._vacuum_lock.release()

        threading.Thread(target=run, name="matcher-vacuum", daemon=True).start()

    # -- failed victim guesses

    def guess_failures(self, keys: Sequence[bytes], *, since: int) -> dict[bytes, dict[int, int]]:
        """Failures per key and bucket from ``since`` on (see ``GuessStore``)."""
        if not keys:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key, bucket, failures FROM guess_failures "
                "WHERE key = ANY(%s::bytea[]) AND bucket >= %s",
                ([bytes(k) for k in keys], since),
            ).fetchall()
        out: dict[bytes, dict[int, int]] = {}
        for key, bucket, failures in rows:
            out.setdefault(bytes(key), {})[int(bucket)] = int(failures)
        return out

    def add_guess_failure(self, keys: Sequence[bytes], *, bucket: int, prune_before: int) -> None:
        """Count one failure per key in ``bucket``, prune old buckets (see ``GuessStore``).

        The rows are upserted in one fixed order (sorted keys), so two replicas counting
        failures on the same keys at once wait for each other, never deadlock."""
        with self._write() as w:
            w.execute("DELETE FROM guess_failures WHERE bucket < %s", (prune_before,))
            with w.cursor() as cur:
                cur.executemany(
                    "INSERT INTO guess_failures(key, bucket, failures) VALUES (%s, %s, 1) "
                    "ON CONFLICT (key, bucket) DO UPDATE SET "
                    "failures = guess_failures.failures + 1",
                    [(bytes(k), bucket) for k in sorted(set(keys))],
                )

    # -- probing counts (``ProbeStore``)

    def record_probes(
        self, key_id: int, record: ProbeRecord, *, now: int, near_since: int, edge_since: int
    ) -> ProbeTally:
        """Check and record one request's hits (see ``ProbeStore``).

        The transaction first upserts the key's ``probe_keys`` row, which locks it until
        commit: two replicas recording for one key take turns, and each statement after the
        lock reads (READ COMMITTED) everything the previous holder committed. Different keys
        never wait for each other. Two round trips, in pipeline mode: the lock and the reads,
        then the writes, the counts and the commit. The commit does not wait for its WAL
        flush (``synchronous_commit = off`` for this transaction only): these are counts,
        acknowledged to no one, and a crash of the server loses at most its last fraction of
        a second of them, never a committed enrollment or withdrawal."""
        with self._conn() as conn:
            try:
                with conn.pipeline():
                    return self._record_probes(
                        conn, int(key_id), record, int(now), near_since, edge_since
                    )
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _record_probes(
        conn: psycopg.Connection[Any],
        key_id: int,
        record: ProbeRecord,
        now: int,
        near_since: int,
        edge_since: int,
    ) -> ProbeTally:
        slots = sorted({int(i) for i, _, _ in record.hits})
        conn.execute("BEGIN")
        conn.execute("SET LOCAL synchronous_commit = off")
        locked = conn.execute(
            "INSERT INTO probe_keys(key_id) VALUES (%s) ON CONFLICT (key_id) "
            "DO UPDATE SET key_id = excluded.key_id RETURNING throttled_until",
            (key_id,),
        )
        first, second = _near_halves(record)
        near_held = (
            conn.execute(
                "SELECT digest, touches, half0, half1 FROM probe_near "
                "WHERE key_id = %s AND at >= %s "
                "AND (half0 = ANY(%s::bigint[]) OR half1 = ANY(%s::bigint[]))",
                (key_id, near_since, _pg_ints(first), _pg_ints(second)),
            )
            if record.near
            else None
        )
        hits_held = (
            conn.execute(
                "SELECT item, digest, edge FROM probe_hits WHERE key_id = %s "
                "AND at >= %s AND item = ANY(%s::bigint[]) AND digest = ANY(%s::bigint[])",
                (
                    key_id,
                    edge_since,
                    _pg_ints(slots),
                    _pg_ints({int(d) for _, d, _ in record.hits}),
                ),
            )
            if record.hits
            else None
        )
        row = locked.fetchone()  # the first round trip
        throttled = row[0] if row else 0
        touched = 0
        grown: set[int] = set()
        with conn.cursor() as cur:
            if near_held is not None:
                held = {int(d): (int(n), int(a), int(b)) for d, n, a, b in near_held.fetchall()}
                fresh, again = _near_rows(record, held)
                touched = sum(n for _, n, _, _ in fresh) + len(again)
                if fresh:
                    cur.executemany(
                        "INSERT INTO probe_near(key_id, digest, touches, at, half0, half1) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key_id, digest) DO UPDATE "
                        "SET touches = excluded.touches, at = excluded.at",
                        [(key_id, d, n, now, a, b) for d, n, a, b in fresh],
                    )
                if again:
                    cur.executemany(
                        "UPDATE probe_near SET touches = touches + 1, at = %s "
                        "WHERE key_id = %s AND digest = %s",
                        [(now, key_id, d) for d in again],
                    )
            if hits_held is not None:
                held_hits = {(int(i), int(d)): bool(e) for i, d, e in hits_held.fetchall()}
                changed, grown = _hit_rows(record, held_hits)
                if changed:
                    cur.executemany(
                        "INSERT INTO probe_hits(key_id, item, digest, edge, at) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key_id, item, digest) "
                        "DO UPDATE SET edge = excluded.edge, at = excluded.at",
                        [(key_id, i, d, int(e), now) for (i, d), e in sorted(changed.items())],
                    )
        counted = conn.execute(
            "SELECT coalesce(sum(touches), 0) FROM probe_near "
            "WHERE key_id = %s AND touches > 0 AND at >= %s",
            (key_id, near_since),
        )
        per_item = (
            conn.execute(
                "SELECT item, count(*), sum(edge) FROM probe_hits WHERE key_id = %s "
                "AND item = ANY(%s::bigint[]) AND at >= %s GROUP BY item",
                (key_id, _pg_ints(slots), edge_since),
            )
            if slots
            else None
        )
        conn.execute("COMMIT")
        total = counted.fetchone()  # the second round trip
        items: dict[int, tuple[int, int, bool]] = {}
        if per_item is not None:
            for item, spread, edge in per_item.fetchall():
                items[int(item)] = (int(edge), int(spread), int(item) in grown)
        return ProbeTally(int(total[0] if total else 0), touched, items, int(throttled))

    def throttle_probes(
        self, key_id: int, until: int, *, actor: Principal, detail: dict[str, object]
    ) -> None:
        """Throttle the key until ``until`` and audit it (see ``ProbeStore``)."""
        with self._write() as w:
            w.execute(
                "INSERT INTO probe_keys(key_id, throttled_until) VALUES (%s, %s) "
                "ON CONFLICT (key_id) DO UPDATE SET "
                "throttled_until = GREATEST(probe_keys.throttled_until, excluded.throttled_until)",
                (int(key_id), int(until)),
            )
            self._audit(w, actor, Action.MATCH_PROBE, detail=detail)

    def reset_probes(self, key_id: int) -> None:
        """Forget the key's probing counts and throttle (see ``ProbeStore``)."""
        with self._write() as w:
            for table in ("probe_near", "probe_hits", "probe_keys"):
                w.execute(f"DELETE FROM {table} WHERE key_id = %s", (int(key_id),))

    def trim_probes(self, *, near_before: int, edge_before: int) -> int:
        """Delete probing rows older than their windows (see ``ProbeStore``)."""
        with self._write() as w:
            gone = w.execute("DELETE FROM probe_near WHERE at < %s", (int(near_before),)).rowcount
            gone += w.execute("DELETE FROM probe_hits WHERE at < %s", (int(edge_before),)).rowcount
            gone += w.execute(
                "DELETE FROM probe_keys WHERE throttled_until < %s", (int(near_before),)
            ).rowcount
        return int(gone)

    # -- matching

    def active_items(self, item_ids: Sequence[int]) -> set[int]:
        """The ids among ``item_ids`` of active items that are not quarantined (one query for
        any number of ids)."""
        if len(item_ids) == 0:
            return set()
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id FROM items WHERE id = ANY(%s::bigint[]) AND state = 'active' "
                "AND NOT EXISTS (SELECT 1 FROM quarantines q WHERE q.item_id = items.id)",
                ([int(i) for i in item_ids],),
            ).fetchall()
        return {int(r[0]) for r in rows}

    def record_feedback(
        self,
        item_id: int,
        correct: bool,
        *,
        actor: Principal,
        reason: ReportReason | None = None,
        quarantine_after: int | None = None,
    ) -> Quarantine | None:
        """Record the key's current verdict on an active item (see ``MatchStore``).

        The item row is locked first (``FOR UPDATE``): concurrent verdicts on one item run one
        after the other, so the count of "wrong" partners each one reads includes every
        verdict committed before it, and the item is quarantined exactly once.
        """
        if actor.key_id is None:
            raise InvalidInput("a verdict is given with a partner's API key", field="actor")
        now = _now_ms()
        verdict = "correct" if correct else "wrong"
        with self._write() as w:
            row = w.execute(
                "SELECT case_id, number, reviewed_at FROM items WHERE id = %s "
                "AND state = 'active' FOR UPDATE",
                (item_id,),
            ).fetchone()
            if row is None:
                raise NotFound("no such match (it may have been withdrawn)")
            # A verdict written after a review counts as after it, even within the review's
            # millisecond or from a replica whose clock is behind: writes on one item are
            # serialised, so their order is the truth, not the clocks.
            at = now if row[2] is None else max(now, int(row[2]) + 1)
            held = w.execute(
                "SELECT verdict FROM verdicts WHERE item_id = %s AND key_id = %s",
                (item_id, actor.key_id),
            ).fetchone()
            w.execute(
                "INSERT INTO verdicts(item_id, key_id, verdict, reason, at) "
                "VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (item_id, key_id) DO UPDATE SET verdict = excluded.verdict, "
                "reason = excluded.reason, at = excluded.at",
                (item_id, actor.key_id, verdict, None if reason is None else str(reason), at),
            )
            if held is None:
                w.execute(
                    f"UPDATE items SET reported_{verdict} = reported_{verdict} + 1 WHERE id = %s",
                    (item_id,),
                )
            elif held[0] != verdict:
                w.execute(
                    f"UPDATE items SET reported_{verdict} = reported_{verdict} + 1, "
                    f"reported_{held[0]} = greatest(reported_{held[0]} - 1, 0) WHERE id = %s",
                    (item_id,),
                )
            w.execute(
                "INSERT INTO feedback(case_id, item_id, correct, actor, org_id, at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
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
            wrong = w.execute(
                "SELECT count(*) FROM verdicts WHERE item_id = %s AND verdict = 'wrong' "
                "AND at > %s",
                (item_id, -1 if row[2] is None else row[2]),
            ).fetchone()
            partners = int(wrong[0]) if wrong else 0
            if partners < quarantine_after:
                return None
            return self._quarantine(
                w, item_id, row[0], row[1], QuarantineReason.REPORTS, partners, 0, now
            )

    def _quarantine(
        self,
        w: psycopg.Connection[Any],
        item_id: int,
        case_id: int,
        number: int,
        reason: QuarantineReason,
        partners: int,
        matches: int,
        now: int,
    ) -> Quarantine | None:
        """Open a quarantine on a locked active item unless one is open (then None)."""
        cur = w.execute(
            "INSERT INTO quarantines(item_id, reason, detail, since) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (item_id) DO NOTHING",
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
                "SELECT case_id, number, reviewed_at FROM items WHERE id = %s "
                "AND state = 'active' FOR UPDATE",
                (item_id,),
            ).fetchone()
            if row is None or (reason is QuarantineReason.FLOOD and row[2] is not None):
                return None
            return self._quarantine(w, item_id, row[0], row[1], reason, 0, matches, now)

    def item_verdicts(self, item_ids: Sequence[int]) -> list[VerdictRecord]:
        """The current verdicts on ``item_ids``, by item then key."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT item_id, key_id, verdict, reason, at FROM verdicts "
                "WHERE item_id = ANY(%s::bigint[]) ORDER BY item_id, key_id",
                ([int(i) for i in item_ids],),
            ).fetchall()
        return [_verdict(r) for r in rows]

    def review_queue(self, org_id: int | None = None) -> list[ReviewEntry]:
        """Quarantined active items (of one organisation, or all), oldest quarantine first."""
        where, args = ("AND c.org_id = %s", (org_id,)) if org_id is not None else ("", ())
        with self._conn() as conn:
            rows = conn.execute(_QUEUE_SQL.format(where=where), args).fetchall()
        return [_queue_entry(r) for r in rows]

    def restore_item(
        self, case_id: int, number: int, *, actor: Principal, note: str = ""
    ) -> ItemRecord:
        """Lift an item's quarantine after review (see ``MatchStore``)."""
        now = _now_ms()
        with self._write() as w:
            row = w.execute(
                "SELECT i.id, q.reason FROM items i LEFT JOIN quarantines q ON q.item_id = i.id "
                "WHERE i.case_id = %s AND i.number = %s AND i.state = 'active' FOR UPDATE OF i",
                (case_id, number),
            ).fetchone()
            if row is None:
                raise NotFound("no such item")
            if row[1] is None:
                raise Conflict("the item is not quarantined")
            w.execute("DELETE FROM quarantines WHERE item_id = %s", (row[0],))
            # The review covers every verdict given before it, whatever the clock of the
            # replica that wrote them said (verdicts after it are stamped later, above).
            found = w.execute(
                "SELECT coalesce(max(at), 0) FROM verdicts WHERE item_id = %s", (row[0],)
            ).fetchone()
            latest = found[0] if found else 0  # an aggregate always gives a row: for mypy
            w.execute(
                "UPDATE items SET reviewed_at = %s WHERE id = %s", (max(now, int(latest)), row[0])
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
        # Sorted by item id: two replicas flushing at once lock the rows in one order.
        rows = sorted((int(i), int(bucket), int(n)) for i, n in counts.items())
        with self._write() as w, w.cursor() as cur:
            cur.executemany(
                "INSERT INTO match_counts(item_id, bucket, matches) VALUES (%s, %s, %s) "
                "ON CONFLICT (item_id, bucket) DO UPDATE "
                "SET matches = match_counts.matches + excluded.matches",
                rows,
            )

    def trim_match_counts(self, before: int) -> int:
        """Delete the counts of hour buckets before ``before`` (see ``MatchStore``)."""
        with self._write() as w:
            cur = w.execute("DELETE FROM match_counts WHERE bucket < %s", (int(before),))
            return int(cur.rowcount)

    def match_counts(self, item_ids: Sequence[int], since: int) -> dict[int, dict[int, int]]:
        """Per item of ``item_ids``, its hour buckets from ``since`` on (see ``MatchStore``)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT item_id, bucket, matches FROM match_counts "
                "WHERE item_id = ANY(%s::bigint[]) AND bucket >= %s",
                ([int(i) for i in item_ids], int(since)),
            ).fetchall()
        out: dict[int, dict[int, int]] = {}
        for item_id, bucket, matches in rows:
            out.setdefault(int(item_id), {})[int(bucket)] = int(matches)
        return out

    def match_norm(self, since: int, until: int) -> float:
        """Mean matches per (item, hour) row of buckets ``since <= b < until`` (0 if none)."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT avg(matches) FROM match_counts WHERE bucket >= %s AND bucket < %s",
                (int(since), int(until)),
            ).fetchone()
        return float(row[0] or 0.0) if row else 0.0

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
                row = w.execute(
                    "INSERT INTO api_keys(name, role, org_id, key_hash, prefix, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (name, str(role), org_id, key_hash, prefix, now),
                ).fetchone()
                assert row is not None
                key_id = int(row[0])
                self._audit(
                    w,
                    actor,
                    Action.KEY_CREATE,
                    detail={"key_id": key_id, "role": str(role)},
                    at=now,
                )
        except pg_errors.ForeignKeyViolation:
            raise NotFound("no such organisation") from None
        except pg_errors.UniqueViolation:
            raise Conflict("this key exists") from None
        return ApiKeyRecord(key_id, name, role, org_id, prefix, _dt_required(now), None)

    def find_api_key(self, key_hash: bytes) -> ApiKeyRecord | None:
        """The key with this hash (revoked or not), or None."""
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = %s",
                (key_hash,),
            ).fetchone()
        return None if row is None else _key(row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, by id (no key material: only the display prefix)."""
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id").fetchall()
        return [_key(r) for r in rows]

    def revoke_api_key(self, key_id: int, *, actor: Principal) -> ApiKeyRecord:
        """Revoke a key (idempotent); ``NotFound`` if there is no such key."""
        now = _now_ms()
        with self._write() as w:
            cur = w.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (now, key_id),
            )
            exists = w.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s",
                (key_id,),
            ).fetchone()
            if exists is None:
                raise NotFound("no such API key")
            if cur.rowcount:
                self._audit(w, actor, Action.KEY_REVOKE, detail={"key_id": key_id}, at=now)
        return _key(exists)

    # Key policies live in ``meta`` (one JSON row per key, ``key_policy:{id}``), as in SQLite.

    def key_policy(self, key_id: int) -> KeyPolicy:
        """The key's policy, or the default one, with its probing throttle (read fresh:
        every replica sees a change)."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT (SELECT value FROM meta WHERE key = %s), "
                "(SELECT throttled_until FROM probe_keys WHERE key_id = %s)",
                (f"key_policy:{key_id}", int(key_id)),
            ).fetchone()
        policy = KeyPolicy() if row is None or row[0] is None else _policy_from_json(bytes(row[0]))
        return _with_throttle(policy, None if row is None else row[1])

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
            if w.execute("SELECT 1 FROM api_keys WHERE id = %s", (key_id,)).fetchone() is None:
                raise NotFound("no such API key")
            w.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"key_policy:{key_id}", _policy_to_json(policy).encode()),
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
    def _bump_allowlist(w: psycopg.Connection[Any]) -> int:
        # The version row is locked (FOR UPDATE) before it is read, so two writers committing
        # at once give two versions, and a reader never sees a version without its entries.
        w.execute(
            "INSERT INTO meta(key, value) VALUES ('allowlist_version', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (b"0",),
        )
        row = w.execute(
            "SELECT value FROM meta WHERE key = 'allowlist_version' FOR UPDATE"
        ).fetchone()
        assert row is not None
        version = int(bytes(row[0]).decode()) + 1
        w.execute(
            "UPDATE meta SET value = %s WHERE key = 'allowlist_version'", (str(version).encode(),)
        )
        # Wake the replicas' follow loops: they reload the allowlist at once.
        w.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        return version

    @staticmethod
    def _read_allowlist_version(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'allowlist_version'").fetchone()
        return int(bytes(row[0]).decode()) if row else 0

    @staticmethod
    def _insert_allowlist(
        w: psycopg.Connection[Any], entries: Sequence[tuple[Hash, str]], source: str, now: int
    ) -> tuple[list[AllowlistEntry], int]:
        created = []
        for h, label in entries:
            row = w.execute(
                "INSERT INTO allowlist(signal, value, label, source, created_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (signal, value) DO NOTHING "
                "RETURNING id",
                (h.signal.name, h.value, label, source, now),
            ).fetchone()
            if row is not None:
                created.append(
                    AllowlistEntry(
                        int(row[0]),
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
        """Add the seed once (or ``again``), audited; None when it was seeded before.

        The flag's insert decides between replicas starting at once: the second one waits on
        the first one's row and then finds it."""
        now = _now_ms()
        with self._write() as w:
            cur = w.execute(
                "INSERT INTO meta(key, value) VALUES ('allowlist_seeded', %s) "
                "ON CONFLICT (key) DO NOTHING",
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
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_ALLOWLIST_COLUMNS} FROM allowlist ORDER BY id"
            ).fetchall()
        return [_allowlist_entry(r) for r in rows]

    def remove_allowlist_entry(self, entry_id: int, *, actor: Principal) -> AllowlistEntry:
        """Delete one entry (``NotFound`` if none), bump the version, audited."""
        with self._write() as w:
            row = w.execute(
                f"DELETE FROM allowlist WHERE id = %s RETURNING {_ALLOWLIST_COLUMNS}", (entry_id,)
            ).fetchone()
            if row is None:
                raise NotFound("no such allowlist entry")
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
        with self._conn() as conn:
            return self._read_allowlist_version(conn)

    def allowlist_codes(self) -> AllowlistCodes:
        """Every value with its entry id, and the version, in one REPEATABLE READ read."""
        with self._read() as conn:
            version = self._read_allowlist_version(conn)
            rows = conn.execute("SELECT id, signal, value FROM allowlist ORDER BY id").fetchall()
        return AllowlistCodes(version, _allowlist_chunks(rows))

    # -- loading and following

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[PostgresSnapshot]:
        """A consistent read of all hashes and the change-log position it includes.

        One REPEATABLE READ transaction; its position is the horizon of its snapshot, so a
        follower starting there may see a change the snapshot already holds once more
        (harmless: the follower's changes are idempotent), never miss one.
        """
        with self._read() as conn:
            row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
            assert row is not None
            counts = self._signal_counts(conn)
            yield PostgresSnapshot(_format_position((int(row[0]), 0)), counts, conn, self._cipher)

    def _trimmed_through(self, conn: psycopg.Connection[Any]) -> Position:
        row = conn.execute(
            "SELECT value FROM meta WHERE key = 'changes_trimmed_through'"
        ).fetchone()
        return (0, 0) if row is None else _parse_position(bytes(row[0]).decode())

    def changes_since(self, position: str, *, limit: int = 10_000) -> ChangeBatch:
        """Changes committed after ``position``, in ``(xid, seq)`` order, below the horizon
        (see "Positions" in the module docstring)."""
        after = _parse_position(position)
        with self._read() as conn:
            if after < self._trimmed_through(conn):
                raise Conflict("the change log was trimmed past this position: reload")
            row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
            assert row is not None
            horizon = int(row[0])
            rows = conn.execute(
                # Order by the column, qualified: a bare ``xid`` here would name the output
                # column ``xid::text`` and sort as text ('1000' before '999'), which once
                # skipped and repeated changes whenever xids gained a digit.
                "SELECT xid::text, seq, op, item_id, hash_count FROM changes "
                "WHERE (xid, seq) > (%s::text::xid8, %s) AND xid < %s::text::xid8 "
                "ORDER BY changes.xid, changes.seq LIMIT %s",
                (str(after[0]), after[1], str(horizon), limit),
            ).fetchall()
        changes = [Change(op, int(item), int(n)) for _, _, op, item, n in rows]
        if len(rows) == limit:
            return ChangeBatch(changes, _format_position((int(rows[-1][0]), rows[-1][1])), True)
        return ChangeBatch(changes, _format_position(max(after, (horizon, 0))), False)

    def item_codes(self, item_ids: Sequence[int]) -> list[CodeChunk]:
        """Codes and entry ids of the still-active items among ``item_ids``, per signal type."""
        if len(item_ids) == 0:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT item_id, sealed FROM item_codes WHERE item_id = ANY(%s::bigint[]) "
                "ORDER BY item_id",
                (sorted({int(i) for i in item_ids}),),
            ).fetchall()
        return list(_codes_by_signal(self._cipher, [(int(i), bytes(b)) for i, b in rows]))

    def trim_changes(self, before: str) -> int:
        """Delete the changes up to position ``before`` (a follower behind it reloads)."""
        upto = _parse_position(before)
        with self._write() as w:
            cur = w.execute(
                "DELETE FROM changes WHERE (xid, seq) <= (%s::text::xid8, %s)",
                (str(upto[0]), upto[1]),
            )
            mark = max(self._trimmed_through(w), upto)
            w.execute(
                "INSERT INTO meta(key, value) VALUES ('changes_trimmed_through', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_format_position(mark).encode(),),
            )
        return cur.rowcount

    def wait_for_changes(self, timeout: float) -> bool:
        """Block until a write to the change log is notified (True) or ``timeout`` s pass.

        Only a wake-up: the caller then reads ``changes_since`` (the truth). Uses one
        dedicated listening connection, opened on first use and reopened after a failure.
        """
        if self._closed:
            raise Unavailable("the store is closed")
        with self._listener_lock:
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = psycopg.connect(self.url, autocommit=True)
                    self._listener.execute(f"LISTEN {CHANNEL}")
                listener = self._listener
                got = False
                for _ in listener.notifies(timeout=timeout, stop_after=1):
                    got = True
                # Take every other pending notification too: one read covers them all.
                if got:
                    for _ in listener.notifies(timeout=0.0):
                        pass
                return got
            except psycopg.Error:
                if self._listener is not None:
                    self._listener.close()
                self._listener = None
                time.sleep(min(timeout, 0.5))
                return False


def _pg_ints(values: Iterable[int]) -> str:
    """An integer array as PostgreSQL's text form, for a ``%s::bigint[]`` parameter: a few
    hundred digests this way cost microseconds, where psycopg's list dumper checks every
    element's quoting (a millisecond for one PDQ hash's 257 digests)."""
    return "{" + ",".join(map(str, values)) + "}"


def _reason(exc: BaseException) -> str:
    """The server's one-line reason, without the URL (it may hold a password)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
