"""The SQLite store's own promises: files, pragmas, schema versions, locking, the WAL purge.

What every backend promises is tested once for all in ``tests/store/test_contract.py``; the
v1 -> v2 migration of a real v1 folder in ``tests/test_migration.py``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matcher.errors import InvalidInput, Unavailable
from matcher.principal import Principal
from matcher.records import NewItem
from matcher.signals import PDQ, Hash
from matcher.store import SQLiteStore, Store, open_store
from matcher.store.base import ProbeRecord
from matcher.store.sqlite import DB_FILENAME, SCHEMA_VERSION
from matcher.store.sqlite_schema import MIGRATIONS

OPERATOR = Principal.operator("test")


def item() -> NewItem:
    return NewItem([Hash(PDQ, os.urandom(32), 90)])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "data") as s:
        yield s


@pytest.fixture
def case_id(store: SQLiteStore) -> int:
    org = store.create_organisation("Helpline", actor=OPERATOR)
    return store.create_case(org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=OPERATOR).id


def raw(store: SQLiteStore, sql: str, *args: object) -> list[tuple]:
    """Read the file through a separate plain connection, as an operator would."""
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def all_file_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


# -- opening


def test_open_store_takes_a_path_or_a_url(tmp_path: Path) -> None:
    with open_store(tmp_path / "a") as a:
        assert isinstance(a, SQLiteStore) and isinstance(a, Store)
    with open_store(f"sqlite://{tmp_path / 'b'}") as b:
        assert isinstance(b, SQLiteStore) and b.path == tmp_path / "b" / DB_FILENAME
    with open_store(str(tmp_path / "a")) as again:
        assert again.secret_key() == a.secret_key()
    for url, message in (
        ("mysql://db.example/matcher", "unknown store URL scheme 'mysql'"),
        ("sqlite://", "needs a folder path"),
    ):
        with pytest.raises(InvalidInput, match=message) as err:
            open_store(url)
        assert err.value.field == "store"


def test_an_empty_folder_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "new") as store:
        assert store.schema_version == SCHEMA_VERSION == 6
        tables = {r[0] for r in raw(store, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "organisations",
        "cases",
        "items",
        "item_codes",
        "changes",
        "audit",
        "feedback",
        "api_keys",
    } <= tables
    assert (tmp_path / "new" / DB_FILENAME).exists()
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0  # owner-only folder
    assert "hashes" not in tables  # values live sealed in item_codes only
    assert (tmp_path / "new" / DB_FILENAME).stat().st_mode & 0o777 == 0o600
    # The key is beside the folder, not in it, and owner-only too.
    assert (tmp_path / "new.key").stat().st_mode & 0o777 == 0o600


def test_an_old_folder_made_with_mode_0644_is_made_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with SQLiteStore(data):
        pass
    (data / DB_FILENAME).chmod(0o644)
    with SQLiteStore(data):
        for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"):
            assert (data / name).stat().st_mode & 0o777 == 0o600, name


def test_a_folder_that_cannot_be_used_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(Unavailable, match="cannot open the store"):
        open_store(blocker / "data")


def test_wal_and_full_sync_are_on(store: SQLiteStore) -> None:
    assert raw(store, "PRAGMA journal_mode") == [("wal",)]
    assert store._writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert store._writer.execute("PRAGMA secure_delete").fetchone() == (1,)


def test_reopening_applies_nothing_twice_and_a_new_migration_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with SQLiteStore(data) as store:
        store.create_organisation("Kept", actor=OPERATOR)
    future = [*MIGRATIONS, ("ALTER TABLE organisations ADD COLUMN country TEXT",)]
    for _ in range(2):
        with SQLiteStore(data, _migrations=future) as store:
            assert store.schema_version == SCHEMA_VERSION + 1
            assert [o.name for o in store.list_organisations()] == ["Kept"]
    assert len(raw(store, "SELECT * FROM schema_version")) == SCHEMA_VERSION + 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_store(data):
        pass
    conn = sqlite3.connect(data / DB_FILENAME)
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(Unavailable, match="newer"):
        open_store(data)


# -- how rows are laid out


def test_an_item_is_one_sealed_row_that_opens_to_its_entry_ids_and_the_log_holds_no_values(
    store: SQLiteStore, case_id: int
) -> None:
    hashes = [Hash(PDQ, os.urandom(32), 90) for _ in range(3)]
    (record,) = store.add_items(case_id, [NewItem(hashes)], actor=OPERATOR).items
    ((item_id, sealed),) = raw(store, "SELECT item_id, sealed FROM item_codes")
    assert item_id == record.id
    assert not any(h.value in bytes(sealed) for h in hashes)
    assert store.cipher.open_item_hashes(item_id, sealed) == hashes
    (chunk,) = store.item_codes([record.id])
    assert chunk.ids.tolist() == [(record.id << 16) + i for i in range(3)]
    assert [c.tobytes() for c in chunk.codes] == [h.value for h in hashes]
    assert raw(store, "SELECT op, item_id, hash_count FROM changes") == [("add", record.id, 3)]
    # Positions are this backend's own: the decimal seq of the last change read.
    assert store.changes_since("").position == "1"


# -- writing


def test_a_write_blocked_by_another_process_is_unavailable_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    with SQLiteStore(tmp_path / "data", busy_timeout=0.2) as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        case = store.create_case(org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=OPERATOR)
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(Unavailable, match="busy"):
            store.add_items(case.id, [item()], actor=OPERATOR)
        other.execute("ROLLBACK")
        other.close()
        assert store.list_items(case.id) == []
        assert store.add_items(case.id, [item()], actor=OPERATOR).created == [True]


def test_a_long_reader_delays_the_wal_purge_but_not_the_withdrawal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_store(data) as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        case = store.create_case(org.id, "GONE-0000-0000", "scrypt$x", actor=OPERATOR)
        photo = item()
        (record,) = store.add_items(case.id, [photo], actor=OPERATOR).items
        # The value is sealed: what must leave the files is its sealed blob.
        (value,) = (bytes(r[0]) for r in raw(store, "SELECT sealed FROM item_codes"))
        assert value in all_file_bytes(data)
        with store.snapshot() as snap:  # a start-up load in progress
            started = time.monotonic()
            store.withdraw_item(case.id, 1, actor=OPERATOR)
            assert time.monotonic() - started < 5  # gave up waiting for the reader
            assert store.active_items([record.id]) == set()  # but the withdrawal is committed
            assert snap.total == 1  # the snapshot still sees its own past
            assert value in all_file_bytes(data)  # held back by the reader, for now
        # The store finishes the purge itself once the reader is gone.
        deadline = time.monotonic() + 10
        while value in all_file_bytes(data) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert value not in all_file_bytes(data)


def test_audit_refuses_anything_that_looks_like_a_hash(store: SQLiteStore) -> None:
    from matcher.audit import Action

    with pytest.raises(ValueError, match="looks like a hash"), store._write() as w:
        store._audit(w, OPERATOR, Action.CASE_CREATE, detail={"value": os.urandom(32).hex()})
    assert store.audit_log() == []


def _near(digest: int, *neighbours: int) -> tuple[int, tuple[int, int], Callable[[], set[int]]]:
    # Made-up digests sharing their halves, so that every held one is a candidate.
    return (digest, (0, 0), lambda: set(neighbours))


def test_a_schema_4_folder_gains_the_probing_counts_when_opened(tmp_path: Path) -> None:
    """Schema 4 shipped without the probing tables: opening such a folder adds them (v5,
    then v6) and keeps what it held, and the shared probing counts work at once."""
    data = tmp_path / "data"
    with SQLiteStore(data, _migrations=MIGRATIONS[:4]) as store:
        assert store.schema_version == 4
        store.create_organisation("Kept", actor=OPERATOR)
        assert raw(store, "SELECT name FROM sqlite_master WHERE name = 'probe_near'") == []
    with SQLiteStore(data) as store:
        assert store.schema_version == SCHEMA_VERSION == 6
        assert [o.name for o in store.list_organisations()] == ["Kept"]
        tally = store.record_probes(
            7, ProbeRecord(near=[_near(1, 2)]), now=1000, near_since=0, edge_since=0
        )
        assert tally.near_touched == 0
        again = store.record_probes(
            7, ProbeRecord(near=[_near(2, 1)]), now=2000, near_since=0, edge_since=0
        )
        assert again.near_touched == 1


def test_a_schema_5_folder_drops_its_near_rows_and_keeps_the_other_counts(
    tmp_path: Path,
) -> None:
    """Version 6 gives the near rows their half digests; version-5 rows have none and could
    never be found again, so they go (an hour of near counts at most); the (item, query)
    rows and the throttles stay."""
    data = tmp_path / "data"
    with SQLiteStore(data, _migrations=MIGRATIONS[:5]) as store, store._write() as w:
        w.execute("INSERT INTO probe_near(key_id, digest, touches, at) VALUES (7, 1, 1, 5)")
        w.execute("INSERT INTO probe_hits(key_id, item, digest, edge, at) VALUES (7, 2, 3, 1, 5)")
        w.execute("INSERT INTO probe_keys(key_id, throttled_until) VALUES (7, 99)")
    with SQLiteStore(data) as store:
        assert store.schema_version == 6
        assert raw(store, "SELECT count(*) FROM probe_near") == [(0,)]
        assert raw(store, "SELECT item, digest, edge FROM probe_hits") == [(2, 3, 1)]
        tally = store.record_probes(
            7,
            ProbeRecord(near=[_near(1, 2)], hits=[(2, 4, False)]),
            now=10,
            near_since=0,
            edge_since=0,
        )
        assert (tally.near, tally.items, tally.throttled_until) == (0, {2: (1, 2, True)}, 99)
