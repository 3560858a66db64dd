"""The SQLite store's schema: every version from the first release on, and how to migrate.

Each entry of ``MIGRATIONS`` takes the previous version to the next: a tuple of statements,
or a function of the open connection where data must be reshaped. Never edit a released
entry; append a new one. Each version is applied in its own transaction (SQLite DDL is
transactional), so a crash mid-migration leaves the previous version intact.

Schema version 2 (items)::

    schema_version(version PK, applied_at)
    meta(key PK, value)                       secret_key; changes_trimmed_through
    organisations(id PK, name UNIQUE, created_at)
    cases(id PK, number UNIQUE, org_id -> organisations, state, secret_hash,
          created_at, withdrawn_at)           counts derive from the case's items
    items(id PK AUTOINCREMENT, case_id -> cases, number, kind, state, label, fingerprint,
          hash_count, signals JSON, reported_correct, reported_wrong, created_at,
          withdrawn_at, UNIQUE(case_id, number), UNIQUE(case_id, fingerprint))
    hashes(id PK = item_id << 16 | position, signal, value, quality)   the only values
    signal_counts(signal PK, hashes)          kept in the same transactions as hashes
    changes(seq PK AUTOINCREMENT, op 'add'|'remove', item_id, hash_count, at)   no values
    feedback(id PK, case_id -> cases, correct, actor, org_id, at, item_id -> items)
    audit(id PK, at, actor, org_id, action, case_id, detail JSON)   no values
    api_keys(id PK, name, role, org_id -> organisations, key_hash UNIQUE, prefix,
             created_at, revoked_at)

Schema version 3 (sealed at rest): ``hashes`` is replaced by::

    item_codes(item_id PK -> items, sealed)   an active item's hashes, one AES-GCM blob
    meta.secret_key                           now wrapped by the store key

The values live only in ``item_codes``; their key is outside the database (see
``matcher.store.crypto``). Entry ids are still ``item_id << 16 | position``: the position is
kept inside the blob.

Why ``hashes.id`` was the index entry id (v2): an item's rows are one rowid range, so deleting,
reading (``item_codes``) or counting an item's hashes is a range seek with no secondary index,
and the start-up scan hands entry ids to the index as stored.

Schema version 4 (a bank nobody can poison)::

    verdicts(item_id -> items, key_id -> api_keys, verdict 'correct'|'wrong', reason, at,
             PK(item_id, key_id))         one current verdict per partner key and item
    quarantines(item_id PK -> items, reason 'reports'|'flood', detail JSON, since)
                                              open quarantines only (history: the audit)
    items.reviewed_at                         last review; verdicts before it no longer count
    match_counts(item_id, bucket, matches, PK(item_id, bucket))   matches per item per hour
    allowlist(id PK AUTOINCREMENT, signal, value, label, source 'seed'|'admin', created_at,
              UNIQUE(signal, value))      hashes of benign, widely shared pictures
    guess_failures(key, bucket, failures, PK(key, bucket))   failed victim guesses per keyed
                                              address / case / overall, per time bucket

``items.reported_correct`` / ``reported_wrong`` are from now on the counts of the current
verdicts (distinct partner keys); the counts a v3 folder held (anonymous repeats) are kept as
they were, with no verdict rows behind them, so they never count towards a quarantine.
The allowlist's values are not sealed: they are hashes of pictures known to be benign and
public (a meme, a flat grey square), which say nothing about anyone.

Schema version 5 (probing counts shared by every replica, issue 12)::

    probe_near(key_id, digest, touches, at, PK(key_id, digest))   keyed digests of hit
                                              query hashes; touches: arrivals while near
    probe_hits(key_id, item, digest, edge, at, PK(key_id, item, digest))   keyed (item,
                                              query) hits, for the edge and spread counts
    probe_keys(key_id PK, throttled_until)    the lock row and shared throttle per key

Schema version 6 (issue 15): ``probe_near`` gains ``half0`` and ``half1``, keyed digests of
its hash's two halves, each indexed with ``key_id``: a hash's held one-bit neighbours are
found among the rows sharing a half (``matcher.bank.probe_counts``). Version-5 rows are
dropped (they have no halves).

From version 1 to 2 (``_v2_items``), for data folders made before items existed:

- each v1 enrollment call becomes one item: the hash rows of one case sharing one
  ``created_at`` (one ``add_hashes`` transaction wrote them all with the same time), in id
  order, numbered 1, 2, ... per case in enrollment order, kind image, no label. A call of more
  than 65,536 hashes is split into items of at most 65,536 (the item limit). Two calls on one
  case within the same millisecond would merge into one item (v1 recorded nothing finer).
- each item's fingerprint is computed as a new enrollment's is, so re-sending the same hashes
  as one item is recognised as held.
- v1 feedback counts (per case) go to the case's first item, and its feedback rows name it.
- v1 withdrawn cases kept no hashes, so they get no items (their counts, if any, stay in the
  feedback rows only).
- the v1 change log (ranges of hash row ids) is dropped: its positions mean nothing to the new
  log, which starts empty (a follower loads from a snapshot after an upgrade).
- audit rows keep their history; two actions get their new names (``organisation.create`` ->
  ``org.create``, ``match.feedback`` -> ``match.report``); the match-id key becomes the
  store's ``secret_key`` (it keys item ids and fingerprints now).

The v1 hash table is dropped in the same transaction; secure_delete (on since v1) zeroes its
freed pages, so a later withdrawal of a migrated item leaves no copy of its values in the
file (``tests/test_migration.py`` reads the raw files to check).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable

from matcher.audit import RENAMED_V1
from matcher.credentials import item_fingerprint
from matcher.records import ITEM_BITS, MAX_ITEM_HASHES
from matcher.signals import SIGNALS, Hash
from matcher.store.crypto import ItemCipher

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration"]

Migration = tuple[str, ...] | Callable[[sqlite3.Connection, ItemCipher], None]
"""A migration: statements, or a function of the open connection and the store's cipher."""

# Version 1: the first release (cases of hashes).
_V1: tuple[str, ...] = (
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
)

_V2_ITEMS = """CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL REFERENCES cases(id),
    number INTEGER NOT NULL CHECK (number >= 1),
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    state TEXT NOT NULL CHECK (state IN ('active', 'withdrawn')),
    label TEXT,
    fingerprint BLOB,
    hash_count INTEGER NOT NULL,
    signals TEXT NOT NULL DEFAULT '{}',
    reported_correct INTEGER NOT NULL DEFAULT 0,
    reported_wrong INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    withdrawn_at INTEGER,
    UNIQUE (case_id, number),
    UNIQUE (case_id, fingerprint)
)"""

# No AUTOINCREMENT: the id is the entry id, derived from the item's (never reused) id.
_V2_HASHES = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    signal TEXT NOT NULL,
    value BLOB NOT NULL,
    quality INTEGER
)"""

# One row per item added or removed, however many hashes it holds: 10M hashes in items of
# ~230 take ~45k rows here. seq is commit order (one writer), which is what positions use.
_V2_CHANGES = """CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    item_id INTEGER NOT NULL,
    hash_count INTEGER NOT NULL,
    at INTEGER NOT NULL
)"""


def _v2_items(conn: sqlite3.Connection, cipher: ItemCipher) -> None:
    """Schema 2: items (see the module docstring for how v1 rows map to them)."""
    conn.execute(_V2_ITEMS)
    conn.execute(_V2_HASHES.format(name="hashes_v2"))
    conn.execute("UPDATE meta SET key = 'secret_key' WHERE key = 'match_id_key'")
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('secret_key', ?)",
        (secrets.token_bytes(32),),
    )
    key = bytes(conn.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()[0])
    calls = conn.execute(
        "SELECT case_id, created_at FROM hashes GROUP BY case_id, created_at ORDER BY min(id)"
    ).fetchall()
    numbers: Counter[int] = Counter()
    for case_id, created_at in calls:
        rows = conn.execute(
            "SELECT signal, value, quality FROM hashes WHERE case_id = ? AND created_at = ? "
            "ORDER BY id",
            (case_id, created_at),
        ).fetchall()
        # v1 stored each (signal, value) once per case: there are no repeats to drop.
        for start in range(0, len(rows), MAX_ITEM_HASHES):
            part = rows[start : start + MAX_ITEM_HASHES]
            numbers[case_id] += 1
            signals = Counter(s for s, _, _ in part)
            fingerprint = item_fingerprint(key, [Hash(SIGNALS[s], bytes(v)) for s, v, _ in part])
            cur = conn.execute(
                "INSERT INTO items(case_id, number, kind, state, fingerprint, hash_count, "
                "signals, created_at) VALUES (?, ?, 'image', 'active', ?, ?, ?, ?)",
                (
                    case_id,
                    numbers[case_id],
                    fingerprint,
                    len(part),
                    json.dumps({n: signals[n] for n in SIGNALS if n in signals}),
                    created_at,
                ),
            )
            base = int(cur.lastrowid or 0) << ITEM_BITS
            conn.executemany(
                "INSERT INTO hashes_v2(id, signal, value, quality) VALUES (?, ?, ?, ?)",
                ((base + pos, s, v, q) for pos, (s, v, q) in enumerate(part)),
            )
    conn.execute("ALTER TABLE feedback ADD COLUMN item_id INTEGER REFERENCES items(id)")
    first_item = "(SELECT min(i.id) FROM items i WHERE i.case_id = {table}.case_id)"
    conn.execute(f"UPDATE feedback SET item_id = {first_item.format(table='feedback')}")
    conn.execute(
        "UPDATE items SET reported_correct = (SELECT reported_correct FROM cases c "
        "WHERE c.id = items.case_id), reported_wrong = (SELECT reported_wrong FROM cases c "
        "WHERE c.id = items.case_id) "
        f"WHERE id = {first_item.format(table='items')}"
    )
    conn.execute("DROP TABLE hashes")
    conn.execute("ALTER TABLE hashes_v2 RENAME TO hashes")
    conn.execute("DROP TABLE changes")
    conn.execute(_V2_CHANGES)
    for column in ("hash_count", "reported_correct", "reported_wrong"):
        conn.execute(f"ALTER TABLE cases DROP COLUMN {column}")
    conn.execute("DELETE FROM signal_counts")
    conn.execute(
        "INSERT INTO signal_counts(signal, hashes) SELECT signal, count(*) FROM hashes "
        "GROUP BY signal"
    )
    conn.executemany(
        "UPDATE audit SET action = ? WHERE action = ?",
        [(str(new), old) for old, new in RENAMED_V1.items()],
    )


_V3_ITEM_CODES = """CREATE TABLE item_codes (
    item_id INTEGER PRIMARY KEY REFERENCES items(id),
    sealed BLOB NOT NULL
)"""


def _v3_sealed(conn: sqlite3.Connection, cipher: ItemCipher) -> None:
    """Schema 3: hash values sealed at rest, one blob per item; the secret key wrapped.

    Each active item's hash rows become one sealed blob (``crypto.ItemCipher.seal_item``), in
    position order, qualities kept; the hash table is dropped (secure_delete zeroes its pages,
    and the store checkpoints the WAL after a migration). The store's secret key is replaced
    by its wrapped form.
    """
    conn.execute(_V3_ITEM_CODES)
    item_id: int | None = None
    hashes: list[Hash] = []

    def flush() -> None:
        if item_id is not None and hashes:
            conn.execute(
                "INSERT INTO item_codes(item_id, sealed) VALUES (?, ?)",
                (item_id, cipher.seal_item(item_id, hashes)),
            )

    for entry, signal, value, quality in conn.execute(
        "SELECT id, signal, value, quality FROM hashes ORDER BY id"
    ):
        owner = int(entry) >> ITEM_BITS
        if owner != item_id:
            flush()
            item_id, hashes = owner, []
        hashes.append(Hash(SIGNALS[signal], bytes(value), quality))
    flush()
    conn.execute("DROP TABLE hashes")
    row = conn.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
    if row is not None:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'secret_key'",
            (cipher.seal_secret("secret_key", bytes(row[0])),),
        )


# Version 4: partner verdicts, quarantine, flood counts, the allowlist (issue 11).
_V4: tuple[str, ...] = (
    """CREATE TABLE verdicts (
        item_id INTEGER NOT NULL REFERENCES items(id),
        key_id INTEGER NOT NULL REFERENCES api_keys(id),
        verdict TEXT NOT NULL CHECK (verdict IN ('correct', 'wrong')),
        reason TEXT,
        at INTEGER NOT NULL,
        PRIMARY KEY (item_id, key_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE quarantines (
        item_id INTEGER PRIMARY KEY REFERENCES items(id),
        reason TEXT NOT NULL CHECK (reason IN ('reports', 'flood')),
        detail TEXT NOT NULL DEFAULT '{}',
        since INTEGER NOT NULL
    )""",
    "ALTER TABLE items ADD COLUMN reviewed_at INTEGER",
    # One row per item per hour with matches: a replica adds its counts every few seconds, so
    # the flood rule sees every replica's matches without a write per match.
    """CREATE TABLE match_counts (
        item_id INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        matches INTEGER NOT NULL,
        PRIMARY KEY (item_id, bucket)
    ) WITHOUT ROWID""",
    """CREATE TABLE allowlist (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        signal TEXT NOT NULL,
        value BLOB NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL CHECK (source IN ('seed', 'admin')),
        created_at INTEGER NOT NULL,
        UNIQUE (signal, value)
    )""",
    # Failed victim guesses (issue 12), per key and time bucket, so every replica counts them
    # together: a key is an HMAC of an address, a case number or "all" under the store's
    # secret key (``matcher.service.guesses``), never the address or number itself.
    """CREATE TABLE guess_failures (
        key BLOB NOT NULL,
        bucket INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        PRIMARY KEY (key, bucket)
    ) WITHOUT ROWID""",
    "CREATE INDEX guess_failures_by_bucket ON guess_failures(bucket)",
)


# Version 5 (issue 12): probing counts shared by every replica (``matcher.bank.probe_counts``).
_V5: tuple[str, ...] = (
    # Per partner key, so every replica counts one prober's queries together. Digests are
    # keyed (64 bits, under a key derived from the store's secret key): never a hash value,
    # never an item id in clear. Only
    # queries that hit something are recorded. ``at`` is epoch ms; old rows are trimmed.
    """CREATE TABLE probe_near (
        key_id INTEGER NOT NULL,
        digest INTEGER NOT NULL,
        touches INTEGER NOT NULL CHECK (touches >= 0),
        at INTEGER NOT NULL,
        PRIMARY KEY (key_id, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX probe_near_by_at ON probe_near(at)",
    # The near count reads the near rows only: few, where honest partners' hits are many.
    "CREATE INDEX probe_near_counted ON probe_near(key_id, at) WHERE touches > 0",
    """CREATE TABLE probe_hits (
        key_id INTEGER NOT NULL,
        item INTEGER NOT NULL,
        digest INTEGER NOT NULL,
        edge INTEGER NOT NULL CHECK (edge IN (0, 1)),
        at INTEGER NOT NULL,
        PRIMARY KEY (key_id, item, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX probe_hits_by_at ON probe_hits(at)",
    # One row per key with probing counts: the row every check-and-record of the key locks
    # first (PostgreSQL), and the key's throttle, which every replica reads with its policy.
    """CREATE TABLE probe_keys (
        key_id INTEGER PRIMARY KEY,
        throttled_until INTEGER NOT NULL DEFAULT 0
    )""",
)


# Version 6 (issue 15): the near rows carry keyed digests of their hash's two halves, indexed,
# so that a hash's held neighbours are found by two lookups instead of 257
# (``matcher.bank.probe_counts``). Rows of version 5 have no halves and could never be found
# again: they are dropped (near counts of the last hour, acknowledged to no one; the
# per-replica watch and the other counts are untouched).
_V6: tuple[str, ...] = (
    "DROP TABLE probe_near",
    """CREATE TABLE probe_near (
        key_id INTEGER NOT NULL,
        digest INTEGER NOT NULL,
        touches INTEGER NOT NULL CHECK (touches >= 0),
        at INTEGER NOT NULL,
        half0 INTEGER NOT NULL,
        half1 INTEGER NOT NULL,
        PRIMARY KEY (key_id, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX probe_near_by_at ON probe_near(at)",
    "CREATE INDEX probe_near_counted ON probe_near(key_id, at) WHERE touches > 0",
    "CREATE INDEX probe_near_half0 ON probe_near(key_id, half0)",
    "CREATE INDEX probe_near_half1 ON probe_near(key_id, half1)",
)

MIGRATIONS: list[Migration] = [_V1, _v2_items, _v3_sealed, _V4, _V5, _V6]

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes."""
