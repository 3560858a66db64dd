"""The index follower: the one code path that changes the index, over real stores and indexes.

Writers here use their own store handles on the same folder, as other processes (or other
replicas sharing one database) would: the follower learns of their writes only through the
change log.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from matcher.bank import IndexFollower
from matcher.errors import Conflict
from matcher.principal import Principal
from matcher.records import ItemState, NewItem, entry_ids
from matcher.signals import PDQ, PHASH, SIGNALS, Hash
from matcher.store import SQLiteStore

OPERATOR = Principal.operator("test")


def photo(n: int = 3) -> NewItem:
    return NewItem([Hash(PDQ, os.urandom(32), 90) for _ in range(n)] + [Hash(PHASH, os.urandom(8))])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def writer(folder: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(folder) as store:
        yield store


@pytest.fixture
def reader(folder: Path, writer: SQLiteStore) -> Iterator[SQLiteStore]:
    with SQLiteStore(folder) as store:
        yield store


@pytest.fixture
def case_id(writer: SQLiteStore) -> int:
    org = writer.create_organisation("Helpline", actor=OPERATOR)
    return writer.create_case(org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=OPERATOR).id


def held(follower: IndexFollower, item: NewItem) -> list[bool]:
    """For each hash of ``item``, whether the follower's index finds it at distance 0."""
    out = []
    for h in item.hashes:
        ((ids, _),) = follower.index.search(h.signal, np.frombuffer(h.value, np.uint8)[None], 0)
        out.append(len(ids) > 0)
    return out


def entries_in_store(store: SQLiteStore) -> set[int]:
    with store.snapshot() as snap:
        return {int(i) for chunk in snap.chunks() for i in chunk.ids}


def entries_in_index(follower: IndexFollower) -> int:
    return sum(follower.index.size(s) for s in SIGNALS.values())


def test_catching_up_applies_exactly_the_changes_after_the_snapshot(
    writer: SQLiteStore, reader: SQLiteStore, case_id: int
) -> None:
    early, doomed = photo(), photo()
    writer.add_items(case_id, [early, doomed], actor=OPERATOR)
    follower = IndexFollower(reader)
    assert follower.catch_up() == 0 and not follower.ready  # nothing to catch up to yet
    follower.load()
    assert follower.ready and all(held(follower, early)) and all(held(follower, doomed))
    # Changes after the load: one enrollment, one withdrawal of a loaded item.
    late = photo()
    writer.add_items(case_id, [late], actor=OPERATOR)
    writer.withdraw_item(case_id, 2, actor=OPERATOR)
    assert follower.catch_up() == 2
    assert all(held(follower, early)) and all(held(follower, late))
    assert not any(held(follower, doomed))
    assert follower.position == writer.changes_since("").position
    assert follower.catch_up() == 0  # nothing new


def test_writes_during_the_load_are_caught_up_by_the_load(
    writer: SQLiteStore, reader: SQLiteStore, case_id: int
) -> None:
    items = [photo(50) for _ in range(40)]
    writer.add_items(case_id, items, actor=OPERATOR)
    follower = IndexFollower(reader)
    late = photo()
    seen = []

    def progress(done: int, total: int) -> None:
        # Called while the snapshot is read: write from "another process" meanwhile.
        seen.append(done)
        if len(seen) == 2:
            writer.add_items(case_id, [late], actor=OPERATOR)
            writer.withdraw_item(case_id, 1, actor=OPERATOR)

    follower.load(progress)
    assert len(seen) >= 2
    assert all(held(follower, late)) and not any(held(follower, items[0]))
    assert entries_in_index(follower) == len(entries_in_store(writer)) == 39 * 51 + 4


def test_long_logs_are_followed_in_batches(
    writer: SQLiteStore, reader: SQLiteStore, case_id: int
) -> None:
    follower = IndexFollower(reader, batch=4)
    follower.load()
    items = [photo(1) for _ in range(25)]
    for item in items:
        writer.add_items(case_id, [item], actor=OPERATOR)
    for number in range(1, 26, 2):
        writer.withdraw_item(case_id, number, actor=OPERATOR)
    assert follower.catch_up() == 25 + 13
    assert [all(held(follower, i)) for i in items] == [n % 2 == 1 for n in range(25)]
    assert entries_in_index(follower) == 12 * 2


def test_removals_need_no_read_of_the_deleted_rows(
    writer: SQLiteStore, reader: SQLiteStore, case_id: int
) -> None:
    (record,) = writer.add_items(case_id, [photo(4)], actor=OPERATOR).items
    follower = IndexFollower(reader)
    follower.load()
    entries = entry_ids(record.id, record.hash_count)
    assert sorted(entries.tolist()) == sorted(entries_in_store(writer))
    writer.withdraw_case(case_id, actor=OPERATOR)
    assert writer.get_item(case_id, 1).state is ItemState.WITHDRAWN  # type: ignore[union-attr]
    assert follower.catch_up() == 1 and entries_in_index(follower) == 0


def test_a_follower_behind_a_trimmed_log_is_told_to_reload(
    writer: SQLiteStore, reader: SQLiteStore, case_id: int
) -> None:
    follower = IndexFollower(reader)
    follower.load()
    writer.add_items(case_id, [photo()], actor=OPERATOR)
    writer.add_items(case_id, [photo()], actor=OPERATOR)
    writer.trim_changes(writer.changes_since("").position)
    with pytest.raises(Conflict, match="reload"):
        follower.catch_up()
    follower.load()
    assert entries_in_index(follower) == 8 and follower.catch_up() == 0


def test_two_writers_committing_concurrently_and_a_follower_that_misses_nothing(
    folder: Path, reader: SQLiteStore, case_id: int
) -> None:
    """Two writer threads, each with its own store handle, enroll and withdraw items
    (withdrawals of older items land between enrollments of newer ones, so the log is not in
    item-id order) while a follower catches up in a loop. At the end its index holds exactly
    the entries of the active items: no add missed, no remove missed, nothing twice.

    SQLite commits one writer at a time, so here a change's log position is its commit order;
    with PostgreSQL (the replicas issue) transactions commit out of id order too, which the
    position rule in ``matcher.store.base`` covers and the store conformance suite checks.
    """
    follower = IndexFollower(reader, batch=5)
    follower.load()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with SQLiteStore(folder) as mine:
                org_id = mine.get_case_by_id(case_id).org_id  # type: ignore[union-attr]
                case = mine.create_case(org_id, f"WRIT-ER{n}0-0000", "scrypt$x", actor=OPERATOR)
                for i in range(30):
                    size = 30 if (i + n) % 2 else 1
                    mine.add_items(case.id, [photo(size), photo(1)], actor=OPERATOR)
                    if i % 4 == 1:
                        mine.withdraw_item(case.id, 2 * i - 1, actor=OPERATOR)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    applied = 0
    while any(t.is_alive() for t in threads):
        applied += follower.catch_up()
    for t in threads:
        t.join()
    applied += follower.catch_up()
    assert errors == []
    assert applied == 2 * (60 + 8)
    in_store = entries_in_store(reader)
    assert entries_in_index(follower) == len(in_store)
    # Every stored entry is in the index under its own id, with its own code.
    with reader.snapshot() as snap:
        for chunk in snap.chunks():
            found = follower.index.search(SIGNALS[chunk.signal], chunk.codes, 0)
            for entry, (ids, _) in zip(chunk.ids.tolist(), found, strict=True):
                assert entry in ids.tolist()
