"""The SQLite store: schema and migrations, atomic writes, the change log, real deletion."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from matcher.errors import Conflict, NotFound, Unavailable
from matcher.principal import Principal, Role
from matcher.signals import MD5, PDQ, PHASH, Hash
from matcher.store import CaseState, SQLiteStore, open_store
from matcher.store.sqlite import _MIGRATIONS, DB_FILENAME, SCHEMA_VERSION

OPERATOR = Principal.operator("test")


def pdq(quality: int = 90) -> Hash:
    return Hash(PDQ, os.urandom(32), quality)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    with open_store(tmp_path / "data") as s:
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


# -- schema


def test_an_empty_folder_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    with open_store(tmp_path / "new") as store:
        assert store.schema_version == SCHEMA_VERSION
        tables = {r[0] for r in raw(store, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "organisations",
        "cases",
        "hashes",
        "changes",
        "audit",
        "feedback",
        "api_keys",
    } <= tables
    assert (tmp_path / "new" / DB_FILENAME).exists()
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0  # owner-only folder


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
    with open_store(data) as store:
        store.create_organisation("Kept", actor=OPERATOR)
    future = [*_MIGRATIONS, ("ALTER TABLE organisations ADD COLUMN country TEXT",)]
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


# -- cases and hashes


def test_add_hashes_commits_rows_change_log_and_audit_together(
    store: SQLiteStore, case_id: int
) -> None:
    hashes = [pdq(), pdq(), Hash(PHASH, os.urandom(8)), Hash(MD5, os.urandom(16))]
    added = store.add_hashes(case_id, hashes, actor=OPERATOR)
    assert added.ids == list(range(added.ids[0], added.ids[0] + 4))
    assert added.duplicates == 0
    rows = raw(store, "SELECT id, signal, value FROM hashes ORDER BY id")
    assert [(r[0], r[1], bytes(r[2])) for r in rows] == [
        (i, h.signal.name, h.value) for i, h in zip(added.ids, hashes, strict=True)
    ]
    (change,) = store.changes_since(0)
    assert (change.op, change.ids) == ("add", range(added.ids[0], added.ids[-1] + 1))
    case = store.get_case_by_id(case_id)
    assert case is not None and case.hash_count == 4
    assert store.hash_counts() == {"pdq": 2, "phash": 1, "md5": 1}
    enroll = store.audit_log(case_id=case_id)[0]
    assert enroll.action == "case.enroll"
    assert enroll.detail == {"added": 4, "duplicates": 0, "pdq": 2, "phash": 1, "md5": 1}


def test_duplicates_are_skipped_so_a_retry_is_idempotent(store: SQLiteStore, case_id: int) -> None:
    a, b = pdq(), pdq()
    first = store.add_hashes(case_id, [a, a, b], actor=OPERATOR)
    assert (len(first.ids), first.duplicates) == (2, 1)
    again = store.add_hashes(case_id, [b, a], actor=OPERATOR)
    assert (again.ids, again.duplicates) == ([], 2)
    assert store.case_signal_counts(case_id) == {"pdq": 2}


def test_withdraw_deletes_rows_logs_the_removal_and_is_idempotent(
    store: SQLiteStore, case_id: int
) -> None:
    added = store.add_hashes(case_id, [pdq(), pdq()], actor=OPERATOR)
    removed = store.withdraw_case(case_id, actor=OPERATOR)
    assert removed == [(i, "pdq") for i in added.ids]
    assert raw(store, "SELECT count(*) FROM hashes") == [(0,)]
    assert [(c.op, list(c.ids)) for c in store.changes_since(0)] == [
        ("add", added.ids),
        ("remove", added.ids),
    ]
    case = store.get_case_by_id(case_id)
    assert case is not None
    assert (case.state, case.hash_count) == (CaseState.WITHDRAWN, 0)
    assert store.hash_counts() == {}
    assert case.withdrawn_at is not None
    assert store.withdraw_case(case_id, actor=OPERATOR) == []
    with pytest.raises(Conflict):
        store.add_hashes(case_id, [pdq()], actor=OPERATOR)


def test_withdrawn_values_leave_the_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_store(data) as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        kept = store.create_case(org.id, "KEPT-0000-0000", "scrypt$x", actor=OPERATOR)
        gone = store.create_case(org.id, "GONE-0000-0000", "scrypt$x", actor=OPERATOR)
        keep_hash, gone_hash = pdq(), pdq()
        store.add_hashes(kept.id, [keep_hash], actor=OPERATOR)
        store.add_hashes(gone.id, [gone_hash], actor=OPERATOR)
        # Control: while both are stored, both values are in the files (db and/or WAL).
        before = all_file_bytes(data)
        assert keep_hash.value in before and gone_hash.value in before
        store.withdraw_case(gone.id, actor=OPERATOR)
        during = all_file_bytes(data)  # store still open, no VACUUM
    after = all_file_bytes(data)
    for blob in (during, after):
        assert gone_hash.value not in blob
        assert gone_hash.hex.encode() not in blob
        assert keep_hash.value in blob


def test_a_long_reader_delays_the_wal_purge_but_not_the_withdrawal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_store(data) as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        case = store.create_case(org.id, "GONE-0000-0000", "scrypt$x", actor=OPERATOR)
        h = pdq()
        store.add_hashes(case.id, [h], actor=OPERATOR)
        with store.snapshot() as snap:  # a start-up load in progress
            started = time.monotonic()
            store.withdraw_case(case.id, actor=OPERATOR)
            assert time.monotonic() - started < 5  # gave up waiting for the reader
            assert store.active_ids([1]) == set()  # but the withdrawal is committed
            assert snap.total == 1  # the snapshot still sees its own past
            assert h.value in all_file_bytes(data)  # held back by the reader, for now
        # The background retry finishes the purge once the reader is gone.
        deadline = time.monotonic() + 10
        while h.value in all_file_bytes(data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert h.value not in all_file_bytes(data)


def test_ids_are_never_reused_after_the_highest_rows_are_withdrawn(
    store: SQLiteStore, case_id: int
) -> None:
    first = store.add_hashes(case_id, [pdq(), pdq()], actor=OPERATOR)
    store.withdraw_case(case_id, actor=OPERATOR)
    org_id = store.get_case_by_id(case_id).org_id  # type: ignore[union-attr]
    other = store.create_case(org_id, "DDDD-EEEE-FFFF", "scrypt$x", actor=OPERATOR)
    second = store.add_hashes(other.id, [pdq()], actor=OPERATOR)
    assert second.ids[0] > max(first.ids)


def test_a_write_blocked_by_another_process_is_unavailable_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    with SQLiteStore(tmp_path / "data", busy_timeout=0.2) as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        case = store.create_case(org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=OPERATOR)
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(Unavailable, match="busy"):
            store.add_hashes(case.id, [pdq()], actor=OPERATOR)
        other.execute("ROLLBACK")
        other.close()
        assert store.case_signal_counts(case.id) == {}
        assert len(store.add_hashes(case.id, [pdq()], actor=OPERATOR).ids) == 1


def test_unknown_case_and_organisation(store: SQLiteStore) -> None:
    with pytest.raises(NotFound):
        store.add_hashes(12345, [pdq()], actor=OPERATOR)
    with pytest.raises(NotFound):
        store.withdraw_case(12345, actor=OPERATOR)
    with pytest.raises(NotFound):
        store.create_case(999, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
    org = store.create_organisation("One", actor=OPERATOR)
    with pytest.raises(Conflict):
        store.create_organisation("One", actor=OPERATOR)
    store.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
    with pytest.raises(Conflict):
        store.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$y", actor=OPERATOR)


def test_active_ids_and_hashes_by_id_see_only_existing_rows(
    store: SQLiteStore, case_id: int
) -> None:
    h = pdq()
    ids = store.add_hashes(case_id, [h, pdq()], actor=OPERATOR).ids
    assert store.active_ids([*ids, 10_000, ids[0]]) == set(ids)
    assert store.active_ids([]) == set()
    assert store.hashes_by_id([ids[0], 777]) == [(ids[0], "pdq", h.value)]
    assert store.case_of_hash(ids[0]) == case_id
    store.withdraw_case(case_id, actor=OPERATOR)
    assert store.active_ids(ids) == set()
    assert store.hashes_by_id(ids) == []
    assert store.case_of_hash(ids[0]) is None


def test_many_ids_are_checked_in_one_query(store: SQLiteStore, case_id: int) -> None:
    ids = store.add_hashes(case_id, [pdq() for _ in range(3000)], actor=OPERATOR).ids
    probe = np.array([*ids, *range(10**6, 10**6 + 50_000)], dtype=np.int64)
    assert store.active_ids(probe.tolist()) == set(ids)


# -- loading and following


def test_snapshot_yields_every_hash_in_id_order_grouped_by_signal(
    store: SQLiteStore, case_id: int
) -> None:
    hashes = [pdq() if i % 3 else Hash(PHASH, os.urandom(8)) for i in range(25)]
    ids = store.add_hashes(case_id, hashes, actor=OPERATOR).ids
    with store.snapshot() as snap:
        assert snap.counts == {"pdq": 16, "phash": 9} and snap.total == 25
        assert snap.mark == store.changes_since(0)[-1].seq
        chunks = list(snap.chunks(rows=7))
        # A write after the snapshot began is not in it.
        store.add_hashes(case_id, [pdq()], actor=OPERATOR)
        assert sum(len(c.ids) for c in snap.chunks()) == 25
    # One signal type after another, each in id order, in blocks of at most 7.
    assert [(c.signal, len(c.ids)) for c in chunks] == [
        ("pdq", 7),
        ("pdq", 7),
        ("pdq", 2),
        ("phash", 7),
        ("phash", 2),
    ]
    got = {}
    for c in chunks:
        assert list(c.ids) == sorted(c.ids)
        assert c.ids.dtype == np.int64 and c.codes.dtype == np.uint8
        assert c.codes.shape == (len(c.ids), {"pdq": 32, "phash": 8}[c.signal])
        for i, code in zip(c.ids.tolist(), c.codes, strict=True):
            got[i] = (c.signal, code.tobytes())
    assert got == {i: (h.signal.name, h.value) for i, h in zip(ids, hashes, strict=True)}


def test_snapshot_keeps_awkward_bytes_intact(store: SQLiteStore, case_id: int) -> None:
    # Zero bytes, separators and invalid UTF-8 must survive the block query's concatenation.
    values = [b"\x00" * 32, b"\xff" * 32, b"," * 32, b"\x00\xc3" * 16, os.urandom(32)]
    ids = store.add_hashes(case_id, [Hash(PDQ, v, 90) for v in values], actor=OPERATOR).ids
    with store.snapshot() as snap:
        (chunk,) = list(snap.chunks())
    assert chunk.ids.tolist() == ids
    assert [row.tobytes() for row in chunk.codes] == values


def test_changes_can_be_followed_and_pruned(store: SQLiteStore, case_id: int) -> None:
    org_id = store.get_case_by_id(case_id).org_id  # type: ignore[union-attr]
    other = store.create_case(org_id, "DDDD-EEEE-FFFF", "scrypt$x", actor=OPERATOR).id
    # Interleave two cases' enrollments: the withdrawn case's ids are two runs.
    first = store.add_hashes(case_id, [pdq(), pdq()], actor=OPERATOR).ids
    store.add_hashes(other, [pdq()], actor=OPERATOR)
    second = store.add_hashes(case_id, [pdq(), pdq()], actor=OPERATOR).ids
    mark = store.changes_since(0)[-1].seq
    store.withdraw_case(case_id, actor=OPERATOR)
    later = store.changes_since(mark)
    assert [(c.op, list(c.ids)) for c in later] == [("remove", first), ("remove", second)]
    assert [c.op for c in store.changes_since(0, limit=2)] == ["add", "add"]
    assert store.prune_changes(mark) == 3
    assert [c.seq for c in store.changes_since(0)] == [c.seq for c in later]


# -- feedback, keys, audit


def test_feedback_counts_per_case(store: SQLiteStore, case_id: int) -> None:
    partner = Principal.key(5, Role.PARTNER, org_id=None)
    store.record_feedback(case_id, True, actor=partner)
    store.record_feedback(case_id, True, actor=partner)
    store.record_feedback(case_id, False, actor=partner)
    case = store.get_case_by_id(case_id)
    assert case is not None and (case.reported_correct, case.reported_wrong) == (2, 1)
    assert store.audit_log(case_id=case_id)[0].actor == "key:5"
    with pytest.raises(NotFound):
        store.record_feedback(4242, True, actor=partner)


def test_api_keys_are_stored_by_hash_and_revocable(store: SQLiteStore) -> None:
    org = store.create_organisation("Platform", actor=OPERATOR)
    record = store.create_api_key(
        "acme", Role.PARTNER, org.id, b"h" * 32, "mk_ABCD", actor=OPERATOR
    )
    assert store.find_api_key(b"h" * 32) == record
    assert store.find_api_key(b"x" * 32) is None
    assert store.list_api_keys() == [record]
    revoked = store.revoke_api_key(record.id, actor=OPERATOR)
    assert not revoked.active
    assert store.revoke_api_key(record.id, actor=OPERATOR).revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        store.revoke_api_key(999, actor=OPERATOR)
    with pytest.raises(NotFound):
        store.create_api_key("x", Role.PARTNER, 999, b"y" * 32, "mk_X", actor=OPERATOR)


def test_audit_refuses_anything_that_looks_like_a_hash(store: SQLiteStore, case_id: int) -> None:
    with pytest.raises(ValueError, match="looks like a hash"), store._write() as w:
        store._audit(w, OPERATOR, "oops", detail={"value": pdq().hex})
    assert all(e.action != "oops" for e in store.audit_log())


def test_audit_rows_never_hold_hash_values(store: SQLiteStore, case_id: int) -> None:
    hashes = [pdq() for _ in range(5)]
    store.add_hashes(case_id, hashes, actor=OPERATOR)
    store.withdraw_case(case_id, actor=OPERATOR)
    audit_text = repr(raw(store, "SELECT * FROM audit")).encode()
    for h in hashes:
        assert h.hex.encode() not in audit_text and h.value not in audit_text


# -- threads


def test_reads_from_many_threads_while_writing(store: SQLiteStore, case_id: int) -> None:
    ids = store.add_hashes(case_id, [pdq() for _ in range(100)], actor=OPERATOR).ids
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert set(ids) <= store.active_ids([*ids, 10**9])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(30):
        store.add_hashes(case_id, [pdq()], actor=OPERATOR)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_case_by_id(case_id).hash_count == 130  # type: ignore[union-attr]
