"""The store contract, written once, run against every backend (``conftest.backend``).

Each test is one promise of ``matcher.store.base``; the backend-specific tests (SQLite's
pragmas, its migrations, its file locking) are in ``tests/test_store.py``.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from matcher.audit import check_detail
from matcher.errors import Conflict, InvalidInput, NotFound, Unavailable
from matcher.principal import Principal, Role
from matcher.records import (
    AllowlistSource,
    ItemKind,
    ItemMatch,
    ItemState,
    NewItem,
    QuarantineReason,
    Query,
    ReportReason,
    entry_ids,
    item_ids_of,
)
from matcher.signals import MD5, PDQ, PHASH, Hash
from matcher.store import Store
from matcher.store.base import ProbeRecord
from tests.store.conftest import Backend

OPERATOR = Principal.operator("test")
FIXTURES = Path(__file__).parent.parent / "fixtures"


def partner_key(store: Store, name: str = "acme") -> Principal:
    """A real partner key (verdicts name their key: it must exist)."""
    record = store.create_api_key(
        name, Role.PARTNER, None, os.urandom(32), f"mk_{name[:4]}", actor=OPERATOR
    )
    return Principal.key(record.id, Role.PARTNER)


def pdq() -> Hash:
    return Hash(PDQ, os.urandom(32), 90)


def image(n: int = 3, *, label: str | None = None) -> NewItem:
    """An item like an enrolled photo: ``n`` PDQ views, a pHash and an MD5."""
    hashes = [pdq() for _ in range(n)] + [Hash(PHASH, os.urandom(8)), Hash(MD5, os.urandom(16))]
    return NewItem(hashes, label=label)


def values_of(item: NewItem) -> list[bytes]:
    return [h.value for h in item.hashes]


@pytest.fixture
def org_id(store: Store) -> int:
    return store.create_organisation("Helpline", actor=OPERATOR).id


@pytest.fixture
def case_id(store: Store, org_id: int) -> int:
    return store.create_case(org_id, "AAAA-BBBB-CCCC", "scrypt$x", actor=OPERATOR).id


def follow(store: Store, position: str = "") -> tuple[list[tuple[str, int, int]], str]:
    """Every change after ``position``, as (op, item id, hash count), and the end position."""
    out: list[tuple[str, int, int]] = []
    while True:
        batch = store.changes_since(position, limit=3)
        out += [(c.op, c.item_id, c.hash_count) for c in batch.changes]
        position = batch.position
        if not batch.more:
            return out, position


def codes_by_entry(store: Store, item_ids: Sequence[int]) -> dict[int, tuple[str, bytes]]:
    return {
        int(i): (chunk.signal, code.tobytes())
        for chunk in store.item_codes(item_ids)
        for i, code in zip(chunk.ids, chunk.codes, strict=True)
    }


# -- accounts


def test_organisations(store: Store) -> None:
    org = store.create_organisation("One", actor=OPERATOR)
    assert store.get_organisation(org.id) == org
    assert store.get_organisation(org.id + 100) is None
    with pytest.raises(Conflict):
        store.create_organisation("One", actor=OPERATOR)
    two = store.create_organisation("Two", actor=OPERATOR)
    assert store.list_organisations() == [org, two]


def test_api_keys_are_stored_by_hash_and_revocable(store: Store, org_id: int) -> None:
    record = store.create_api_key(
        "acme", Role.PARTNER, org_id, b"h" * 32, "mk_ABCD", actor=OPERATOR
    )
    assert store.find_api_key(b"h" * 32) == record
    assert store.find_api_key(b"x" * 32) is None
    assert store.list_api_keys() == [record]
    with pytest.raises(Conflict):
        store.create_api_key("again", Role.PARTNER, None, b"h" * 32, "mk_ABCD", actor=OPERATOR)
    revoked = store.revoke_api_key(record.id, actor=OPERATOR)
    assert not revoked.active
    assert store.revoke_api_key(record.id, actor=OPERATOR).revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        store.revoke_api_key(999, actor=OPERATOR)
    with pytest.raises(NotFound):
        store.create_api_key("x", Role.PARTNER, 999, b"y" * 32, "mk_X", actor=OPERATOR)


def test_key_policies_round_trip_and_are_audited(store: Store, org_id: int) -> None:
    from datetime import UTC, datetime

    from matcher.records import KeyPolicy

    record = store.create_api_key("p", Role.PARTNER, None, b"p" * 32, "mk_P", actor=OPERATOR)
    assert store.key_policy(record.id) == KeyPolicy()
    at = datetime.fromtimestamp(1_700_000_000.123, UTC)
    policy = KeyPolicy(
        exact_distances=True,
        max_distance={"pdq": 24},
        daily_hashes=5,
        suspended_at=at,
        suspend_reason="near",
    )
    store.set_key_policy(record.id, policy, actor=OPERATOR, action="key.suspend", detail={"n": 3})
    assert store.key_policy(record.id) == policy
    with pytest.raises(NotFound):
        store.set_key_policy(999, policy, actor=OPERATOR, action="key.policy")
    store.record_audit("match.probe", actor=OPERATOR, detail={"key_id": record.id, "count": 9})
    [probe, suspend] = store.audit_log(limit=2)
    assert (probe.action, probe.detail) == ("match.probe", {"key_id": record.id, "count": 9})
    assert (suspend.action, suspend.detail) == ("key.suspend", {"key_id": record.id, "n": 3})
    with pytest.raises(ValueError):
        store.record_audit("match.probe", actor=OPERATOR, detail={"value": "ab" * 16})


def test_the_secret_key_is_stable_across_handles(backend: Backend, store: Store) -> None:
    key = store.secret_key()
    assert len(key) >= 32
    assert backend.store().secret_key() == key


# -- cases and enrollment


def test_cases_are_created_once_per_number(store: Store, org_id: int) -> None:
    case = store.create_case(org_id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
    assert store.get_case("AAAA-AAAA-AAAA") == case == store.get_case_by_id(case.id)
    assert (case.state, case.item_count, case.hash_count) == ("active", 0, 0)
    assert store.get_case("ZZZZ-ZZZZ-ZZZZ") is None
    with pytest.raises(Conflict):
        store.create_case(org_id, "AAAA-AAAA-AAAA", "scrypt$y", actor=OPERATOR)
    with pytest.raises(NotFound):
        store.create_case(999, "BBBB-BBBB-BBBB", "scrypt$x", actor=OPERATOR)
    assert store.case_counts() == {"active": 1}


def test_add_items_commits_items_hashes_change_log_and_audit(store: Store, case_id: int) -> None:
    photos = [image(3, label="photo 1"), image(1)]
    added = store.add_items(case_id, photos, actor=OPERATOR)
    assert added.created == [True, True]
    first, second = added.items
    assert [first.number, second.number] == [1, 2]
    assert (first.kind, first.state, first.label) == (ItemKind.IMAGE, ItemState.ACTIVE, "photo 1")
    assert (first.hash_count, dict(first.hashes_by_signal)) == (5, {"pdq": 3, "phash": 1, "md5": 1})
    assert second.label is None and second.hash_count == 3
    assert (added.case.item_count, added.case.hash_count) == (2, 8)
    assert store.list_items(case_id) == [first, second]
    assert store.get_item(case_id, 2) == second and store.get_item(case_id, 3) is None
    assert store.hash_counts() == {"pdq": 4, "phash": 2, "md5": 2}
    assert store.item_count() == 2
    assert follow(store)[0] == [("add", first.id, 5), ("add", second.id, 3)]
    # The item's codes, under its entry ids, in the order they were sent.
    got = codes_by_entry(store, [first.id])
    assert list(got) == entry_ids(first.id, 5).tolist()
    assert [v for _, v in got.values()] == values_of(photos[0])
    enroll = store.audit_log(case_id=case_id)[0]
    assert enroll.action == "case.enroll"
    assert enroll.detail["items"] == 2 and enroll.detail["pdq"] == 4


def test_repeats_in_an_item_are_dropped_and_a_held_item_is_not_added_again(
    store: Store, case_id: int
) -> None:
    a, b = pdq(), pdq()
    first = store.add_items(case_id, [NewItem([a, b, a])], actor=OPERATOR)
    (item,) = first.items
    assert item.hash_count == 2
    # The same set of hashes, in another order, again and twice more in one call: held.
    again = store.add_items(
        case_id, [NewItem([b, a]), NewItem([pdq()]), NewItem([a, b])], actor=OPERATOR
    )
    assert again.created == [False, True, False]
    assert again.items[0] == item and again.items[2] == item
    assert again.items[1].number == 2
    assert again.case.item_count == 2 and again.case.hash_count == 3
    # Two identical new items in one call are one item.
    c = pdq()
    twice = store.add_items(case_id, [NewItem([c]), NewItem([c])], actor=OPERATOR)
    assert twice.created == [True, False] and twice.items[0] == twice.items[1]
    assert [op for op, _, _ in follow(store)[0]] == ["add"] * 3


def test_enrollment_is_refused_without_items_or_into_a_missing_or_withdrawn_case(
    store: Store, case_id: int
) -> None:
    with pytest.raises(InvalidInput):
        store.add_items(case_id, [], actor=OPERATOR)
    with pytest.raises(NotFound):
        store.add_items(12345, [image()], actor=OPERATOR)
    store.withdraw_case(case_id, actor=OPERATOR)
    with pytest.raises(Conflict):
        store.add_items(case_id, [image()], actor=OPERATOR)
    assert store.list_items(case_id) == [] and follow(store)[0] == []


# -- withdrawal


def test_withdrawing_an_item_deletes_its_hashes_and_keeps_the_others(
    store: Store, case_id: int
) -> None:
    kept, gone = store.add_items(
        case_id, [image(2), image(4, label="photo 2")], actor=OPERATOR
    ).items
    _, mark = follow(store)
    record = store.withdraw_item(case_id, gone.number, actor=OPERATOR)
    assert (record.id, record.number, record.state) == (gone.id, 2, ItemState.WITHDRAWN)
    assert record.withdrawn_at is not None and record.created_at == gone.created_at
    # Numbers and dates only: no label, no hash counts by signal.
    assert (record.label, record.hash_count, dict(record.hashes_by_signal)) == (None, 0, {})
    assert store.active_items([kept.id, gone.id]) == {kept.id}
    assert codes_by_entry(store, [gone.id]) == {}
    assert len(codes_by_entry(store, [kept.id, gone.id])) == kept.hash_count
    assert follow(store, mark)[0] == [("remove", gone.id, gone.hash_count)]
    case = store.get_case_by_id(case_id)
    assert case is not None and (case.state, case.item_count, case.hash_count) == (
        "active",
        1,
        kept.hash_count,
    )
    assert store.hash_counts() == {"pdq": 2, "phash": 1, "md5": 1}
    # Idempotent: nothing more is removed or logged.
    assert store.withdraw_item(case_id, gone.number, actor=OPERATOR) == record
    assert follow(store, mark)[0] == [("remove", gone.id, gone.hash_count)]
    with pytest.raises(NotFound):
        store.withdraw_item(case_id, 3, actor=OPERATOR)
    assert store.audit_log(case_id=case_id)[0].action == "item.withdraw"


def test_a_withdrawn_item_can_be_enrolled_again_as_a_new_item(store: Store, case_id: int) -> None:
    photo = image()
    (first,) = store.add_items(case_id, [photo], actor=OPERATOR).items
    store.withdraw_item(case_id, first.number, actor=OPERATOR)
    again = store.add_items(case_id, [photo], actor=OPERATOR)
    assert again.created == [True] and again.items[0].number == 2
    assert again.items[0].id > first.id


def test_withdrawing_a_case_withdraws_every_item(store: Store, case_id: int) -> None:
    items = store.add_items(case_id, [image(), image(), image()], actor=OPERATOR).items
    store.withdraw_item(case_id, 2, actor=OPERATOR)
    _, mark = follow(store)
    case = store.withdraw_case(case_id, actor=OPERATOR)
    assert (case.state, case.item_count, case.hash_count) == ("withdrawn", 0, 0)
    assert case.withdrawn_at is not None
    assert [i.state for i in store.list_items(case_id)] == [ItemState.WITHDRAWN] * 3
    assert follow(store, mark)[0] == [
        ("remove", items[0].id, items[0].hash_count),
        ("remove", items[2].id, items[2].hash_count),
    ]
    assert store.hash_counts() == {} and store.item_count() == 0
    assert store.withdraw_case(case_id, actor=OPERATOR).withdrawn_at == case.withdrawn_at
    assert follow(store, mark)[0][2:] == []
    with pytest.raises(NotFound):
        store.withdraw_case(12345, actor=OPERATOR)
    assert store.case_counts() == {"withdrawn": 1}
    assert store.audit_log(case_id=case_id)[0].detail == {"items": 0, "removed": 0}


def forms(value: bytes) -> list[bytes]:
    """A value as it could sit in a file: raw, hex (both cases), base64."""
    return [value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value)]


def test_values_are_sealed_and_withdrawn_ones_are_gone_from_the_files(
    backend: Backend, store: Store, case_id: int
) -> None:
    """On a backend that seals (SQLite), no value is in its files in any form, and a withdrawn
    item's sealed blob leaves them; on one that does not yet (PostgreSQL), the withdrawn values
    themselves leave its rows."""
    kept, gone, also_gone = image(), image(label="beach"), image()
    added = store.add_items(case_id, [kept, gone], actor=OPERATOR).items
    case = store.get_case_by_id(case_id)
    assert case is not None
    other = store.create_case(
        case.org_id,
        "DDDD-EEEE-FFFF",
        "scrypt$x",
        actor=OPERATOR,  # type: ignore[union-attr]
    )
    (third,) = store.add_items(other.id, [also_gone], actor=OPERATOR).items
    sealed = backend.sealed
    marks = {
        record.id: [sealed(record.id)] if sealed else values_of(item)
        for record, item in zip((*added, third), (kept, gone, also_gone), strict=True)
    }
    # Control: while stored, every item's marks are in the files (database and/or WAL).
    before = backend.raw_bytes()
    assert all(m in before for ms in marks.values() for m in ms)
    assert b"beach" in before
    if sealed:
        for item in (kept, gone, also_gone):
            for h in item.hashes:
                assert not any(form in before for form in forms(h.value))
    store.withdraw_item(case_id, 2, actor=OPERATOR)
    store.withdraw_case(other.id, actor=OPERATOR)
    after = backend.raw_bytes()  # the store still open: no VACUUM, no close
    for gone_id in (added[1].id, third.id):
        assert not any(m in after for m in marks[gone_id])
    assert b"beach" not in after
    assert all(m in after for m in marks[added[0].id])


def test_item_ids_are_never_reused(store: Store, case_id: int) -> None:
    (first,) = store.add_items(case_id, [image()], actor=OPERATOR).items
    store.withdraw_case(case_id, actor=OPERATOR)
    org_id = store.get_case_by_id(case_id).org_id  # type: ignore[union-attr]
    other = store.create_case(org_id, "DDDD-EEEE-FFFF", "scrypt$x", actor=OPERATOR)
    (second,) = store.add_items(other.id, [image()], actor=OPERATOR).items
    assert second.id > first.id


# -- the match path


def test_active_items_checks_many_ids_in_one_call(store: Store, case_id: int) -> None:
    items = store.add_items(case_id, [image(1) for _ in range(300)], actor=OPERATOR).items
    ids = [i.id for i in items]
    probe = [*ids, *range(10**6, 10**6 + 20_000), ids[0]]
    assert store.active_items(probe) == set(ids)
    assert store.active_items([]) == set()
    store.withdraw_item(case_id, items[5].number, actor=OPERATOR)
    assert store.active_items(ids) == set(ids) - {items[5].id}


def test_feedback_counts_per_item_and_sums_per_case(store: Store, case_id: int) -> None:
    PARTNER = partner_key(store)
    other = partner_key(store, "other")
    one, two = store.add_items(case_id, [image(), image()], actor=OPERATOR).items
    store.record_feedback(one.id, True, actor=PARTNER)
    store.record_feedback(one.id, False, actor=other)
    store.record_feedback(two.id, True, actor=PARTNER)
    got = {i.number: (i.reported_correct, i.reported_wrong) for i in store.list_items(case_id)}
    assert got == {1: (1, 1), 2: (1, 0)}
    store.withdraw_item(case_id, 2, actor=OPERATOR)
    case = store.get_case_by_id(case_id)
    # The case's counts sum over its items, withdrawn ones included.
    assert case is not None and (case.reported_correct, case.reported_wrong) == (2, 1)
    with pytest.raises(NotFound):
        store.record_feedback(two.id, True, actor=PARTNER)
    with pytest.raises(NotFound):
        store.record_feedback(4242, True, actor=PARTNER)
    entry = store.audit_log(case_id=case_id)[1]
    assert (entry.action, entry.actor) == ("match.report", f"key:{PARTNER.key_id}")


def test_a_verdict_counts_once_per_key_and_a_later_one_replaces_it(
    store: Store, case_id: int
) -> None:
    me = partner_key(store)
    (item,) = store.add_items(case_id, [image()], actor=OPERATOR).items

    def counts() -> tuple[int, int]:
        got = store.get_item(case_id, 1)
        assert got is not None
        return got.reported_correct, got.reported_wrong

    for _ in range(3):
        store.record_feedback(item.id, True, actor=me)
    assert counts() == (1, 0)
    store.record_feedback(item.id, False, actor=me, reason=ReportReason.WIDELY_SHARED)
    assert counts() == (0, 1)
    [verdict] = store.item_verdicts([item.id])
    assert (verdict.key_id, verdict.correct, verdict.reason) == (
        me.key_id,
        False,
        ReportReason.WIDELY_SHARED,
    )
    case = store.get_case_by_id(case_id)
    assert case is not None and (case.reported_correct, case.reported_wrong) == (0, 1)
    with pytest.raises(InvalidInput):
        store.record_feedback(item.id, True, actor=OPERATOR)  # a verdict needs a key


def test_quarantine_after_k_distinct_partners_and_not_before(store: Store, case_id: int) -> None:
    one, two, three = (partner_key(store, n) for n in ("one", "two", "three"))
    (item,) = store.add_items(case_id, [image()], actor=OPERATOR).items
    # One partner saying "wrong" again and again is one partner.
    for _ in range(3):
        assert store.record_feedback(item.id, False, actor=one, quarantine_after=3) is None
    assert store.record_feedback(item.id, True, actor=two, quarantine_after=3) is None
    assert store.record_feedback(item.id, False, actor=two, quarantine_after=3) is None
    assert store.active_items([item.id]) == {item.id}
    opened = store.record_feedback(item.id, False, actor=three, quarantine_after=3)
    assert opened is not None and opened.reason is QuarantineReason.REPORTS
    assert opened.partners == 3
    assert store.active_items([item.id]) == set()  # effective at once
    held = store.get_item(case_id, 1)
    assert held is not None and held.state is ItemState.ACTIVE and held.quarantine == opened
    # Once open, more verdicts open nothing more.
    assert store.record_feedback(item.id, False, actor=one, quarantine_after=3) is None
    [entry] = [e for e in store.audit_log(case_id=case_id) if e.action == "item.quarantine"]
    assert entry.detail == {"item": 1, "reason": "reports", "partners": 3, "matches": 0}


def test_concurrent_reports_quarantine_exactly_once(
    backend: Backend, store: Store, case_id: int
) -> None:
    partners = [partner_key(store, f"p{i}") for i in range(6)]
    (item,) = store.add_items(case_id, [image()], actor=OPERATOR).items
    handles = [backend.store() for _ in partners]  # one connection each, as replicas have
    opened: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(partners))

    def report(handle: Store, who: Principal) -> None:
        try:
            start.wait()
            got = handle.record_feedback(item.id, False, actor=who, quarantine_after=2)
            if got is not None:
                opened.append(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=report, args=(h, p)) for h, p in zip(handles, partners, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(opened) == 1
    rows = [e for e in store.audit_log(case_id=case_id, limit=100) if e.action == "item.quarantine"]
    assert len(rows) == 1
    held = store.get_item(case_id, 1)
    assert held is not None and held.reported_wrong == len(partners)


def test_review_queue_and_restore(store: Store, case_id: int, org_id: int) -> None:
    one, two = partner_key(store, "one"), partner_key(store, "two")
    kept, item = store.add_items(case_id, [image(), image(label="p2")], actor=OPERATOR).items
    with pytest.raises(Conflict):
        store.restore_item(case_id, item.number, actor=OPERATOR)  # nothing to review
    store.record_feedback(item.id, False, actor=one, quarantine_after=2)
    store.record_feedback(item.id, False, actor=two, quarantine_after=2)
    [entry] = store.review_queue(org_id)
    assert (entry.case_number, entry.number, entry.label) == ("AAAA-BBBB-CCCC", 2, "p2")
    assert entry.quarantine.reason is QuarantineReason.REPORTS and entry.reported_wrong == 2
    assert entry.org_id == org_id
    assert store.review_queue(org_id + 1) == []
    assert store.review_queue() == [entry]
    restored = store.restore_item(case_id, item.number, actor=OPERATOR, note="checked")
    assert restored.quarantine is None and restored.reviewed_at is not None
    assert store.active_items([kept.id, item.id]) == {kept.id, item.id}
    assert store.review_queue() == []
    review = store.audit_log(case_id=case_id)[0]
    assert review.action == "item.review"
    assert review.detail == {
        "item": 2,
        "decision": "restore",
        "reason": "reports",
        "note": "checked",
    }
    # Verdicts from before the review no longer count: one partner giving its verdict again
    # is one verdict since the review, not two; a second partner's makes the quarantine.
    assert store.record_feedback(item.id, False, actor=one, quarantine_after=2) is None
    assert store.active_items([item.id]) == {item.id}
    assert store.record_feedback(item.id, False, actor=two, quarantine_after=2) is not None
    # Withdrawing a quarantined item closes its quarantine.
    store.withdraw_item(case_id, item.number, actor=OPERATOR)
    assert store.review_queue() == []
    with pytest.raises(NotFound):
        store.restore_item(case_id, item.number, actor=OPERATOR)


def test_flood_quarantine_spares_reviewed_items(store: Store, case_id: int) -> None:
    one, two = partner_key(store, "one"), partner_key(store, "two")
    fresh, reviewed = store.add_items(case_id, [image(), image()], actor=OPERATOR).items
    store.record_feedback(reviewed.id, False, actor=one, quarantine_after=2)
    store.record_feedback(reviewed.id, False, actor=two, quarantine_after=2)
    store.restore_item(case_id, reviewed.number, actor=OPERATOR)
    got = store.quarantine_item(fresh.id, QuarantineReason.FLOOD, matches=900)
    assert got is not None and (got.reason, got.matches) == (QuarantineReason.FLOOD, 900)
    assert store.quarantine_item(fresh.id, QuarantineReason.FLOOD, matches=901) is None
    assert store.quarantine_item(reviewed.id, QuarantineReason.FLOOD, matches=900) is None
    assert store.quarantine_item(10**9, QuarantineReason.FLOOD) is None
    assert store.active_items([fresh.id, reviewed.id]) == {reviewed.id}


def test_match_counts_add_up_per_item_and_hour(store: Store, case_id: int) -> None:
    a, b = store.add_items(case_id, [image(), image()], actor=OPERATOR).items
    store.add_match_counts(100, {a.id: 3, b.id: 1})
    store.add_match_counts(100, {a.id: 2})  # another replica's flush
    store.add_match_counts(101, {a.id: 7})
    store.add_match_counts(101, {})
    assert store.match_counts([a.id, b.id, 10**9], 100) == {a.id: {100: 5, 101: 7}, b.id: {100: 1}}
    assert store.match_counts([a.id], 101) == {a.id: {101: 7}}
    assert store.match_norm(100, 101) == 3.0  # (5 + 1) / 2 rows
    assert store.match_norm(0, 100) == 0.0
    assert store.trim_match_counts(101) == 2  # the two rows of hour 100 go
    assert store.match_counts([a.id, b.id], 0) == {a.id: {101: 7}}
    assert store.trim_match_counts(101) == 0


# -- following


def test_a_snapshot_holds_every_hash_with_its_entry_id_and_its_position(
    store: Store, case_id: int
) -> None:
    photos = [image(4), image(9), image(2)]
    items = store.add_items(case_id, photos, actor=OPERATOR).items
    store.withdraw_item(case_id, 3, actor=OPERATOR)
    with store.snapshot() as snap:
        assert snap.counts == {"pdq": 13, "phash": 2, "md5": 2} and snap.total == 17
        chunks = list(snap.chunks(rows=5))
        # Writes after the snapshot began are not in it; they follow its position.
        (late,) = store.add_items(case_id, [image(1)], actor=OPERATOR).items
        assert sum(len(c.ids) for c in snap.chunks()) == 17
        position = snap.position
    assert follow(store, position)[0] == [("add", late.id, 3)]
    # Each signal type's entry ids ascend across its chunks (types may interleave: a backend
    # that seals whole items yields a block of items at a time).
    for name in ("pdq", "phash", "md5"):
        ids = np.concatenate([c.ids for c in chunks if c.signal == name])
        assert list(ids) == sorted(ids) and len(set(ids.tolist())) == len(ids)
    got: dict[int, tuple[str, bytes]] = {}
    for c in chunks:
        assert c.ids.dtype == np.int64 and c.codes.dtype == np.uint8
        assert list(c.ids) == sorted(c.ids)
        for i, code in zip(c.ids.tolist(), c.codes, strict=True):
            got[i] = (c.signal, code.tobytes())
    want = {
        int(e): (h.signal.name, h.value)
        for item, photo in zip(items[:2], photos[:2], strict=True)
        for e, h in zip(entry_ids(item.id, item.hash_count), photo.hashes, strict=True)
    }
    assert got == want
    assert set(item_ids_of(np.array(list(got))).tolist()) == {items[0].id, items[1].id}


def test_awkward_bytes_survive_the_snapshot(store: Store, case_id: int) -> None:
    values = [b"\x00" * 32, b"\xff" * 32, b"," * 32, b"\x00\xc3" * 16]
    items = [NewItem([Hash(PDQ, v, 90)]) for v in values]
    store.add_items(case_id, items, actor=OPERATOR)
    with store.snapshot() as snap:
        (chunk,) = list(snap.chunks())
    assert [row.tobytes() for row in chunk.codes] == values


def test_positions_are_opaque_and_followed_to_the_end(store: Store, case_id: int) -> None:
    assert store.changes_since("").changes == []
    items = store.add_items(case_id, [image(1) for _ in range(7)], actor=OPERATOR).items
    first = store.changes_since("", limit=3)
    assert len(first.changes) == 3 and first.more
    rest, end = follow(store, first.position)
    assert [item for _, item, _ in rest] == [i.id for i in items[3:]]
    last = store.changes_since(end)
    assert (last.changes, last.position, last.more) == ([], end, False)
    with pytest.raises(InvalidInput):
        store.changes_since("not a position")


def test_trimmed_changes_are_gone_and_older_positions_refused(store: Store, case_id: int) -> None:
    store.add_items(case_id, [image(1), image(1)], actor=OPERATOR)
    changes, middle = follow(store)
    (third,) = store.add_items(case_id, [image(1)], actor=OPERATOR).items
    assert store.trim_changes(middle) == len(changes) == 2
    assert follow(store, middle)[0] == [("add", third.id, 3)]
    with pytest.raises(Conflict):
        store.changes_since("")


def test_item_codes_give_only_active_items(store: Store, case_id: int) -> None:
    one, two = store.add_items(case_id, [image(2), image(2)], actor=OPERATOR).items
    chunks = store.item_codes([one.id, two.id, 999_999])
    assert [c.signal for c in chunks] == ["pdq", "phash", "md5"]
    assert set(item_ids_of(np.concatenate([c.ids for c in chunks])).tolist()) == {one.id, two.id}
    store.withdraw_item(case_id, 1, actor=OPERATOR)
    assert set(codes_by_entry(store, [one.id, two.id])) == set(
        entry_ids(two.id, two.hash_count).tolist()
    )
    assert store.item_codes([]) == []


def test_two_writers_committing_concurrently_and_a_follower_that_misses_nothing(
    backend: Backend, store: Store, case_id: int
) -> None:
    """Writers on their own handles (as two processes or replicas would be), each enrolling
    and withdrawing; a follower on a third handle reads the log while they write. Whatever
    order the commits land in relative to the item ids, the follower ends with exactly the
    active items, having seen each add once and each remove after its add."""
    org_id = store.get_case_by_id(case_id).org_id  # type: ignore[union-attr]
    errors: list[BaseException] = []
    done = threading.Event()
    follower = backend.store()

    def writer(n: int) -> None:
        handle = backend.store()
        try:
            case = handle.create_case(org_id, f"WRIT-ER{n}0-0000", "scrypt$x", actor=OPERATOR)
            for i in range(25):
                # Big and small items alternate, so the two writers' commits interleave.
                size = 40 if (i + n) % 2 else 1
                items = handle.add_items(case.id, [image(size), image(1)], actor=OPERATOR).items
                if i % 3 == 0:
                    handle.withdraw_item(case.id, items[0].number, actor=OPERATOR)
        except BaseException as exc:
            errors.append(exc)

    seen: dict[int, list[str]] = {}
    position = ""

    def read() -> None:
        nonlocal position
        while True:
            batch = follower.changes_since(position, limit=7)
            for c in batch.changes:
                seen.setdefault(c.item_id, []).append(c.op)
            position = batch.position
            if not batch.more:
                return

    writers = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for t in writers:
        t.start()
    try:
        while any(t.is_alive() for t in writers):
            read()
    finally:
        for t in writers:
            t.join()
        done.set()
    assert errors == []
    # The writers have committed, but a follower sees a commit only once every transaction
    # with a lower id has ended: on PostgreSQL another transaction that holds an id (an
    # autovacuum ANALYZE of these fresh tables, say) holds the horizon back for a moment, and
    # one more read may still miss the last commits. A follower reads again; so does this test,
    # until every item has arrived (what a real follower does on its next poll).
    deadline = time.monotonic() + 30
    while True:
        read()
        if len(seen) == 100 and sum(ops == ["add", "remove"] for ops in seen.values()) == 18:
            break
        assert time.monotonic() < deadline, f"{len(seen)} items seen"
        time.sleep(0.05)
    # Each change is delivered once, and an item's remove after its add.
    assert all(ops in (["add"], ["add", "remove"]) for ops in seen.values()), seen
    live = {item for item, ops in seen.items() if ops == ["add"]}
    assert len(live) == 100 - 18
    cases = [store.get_case(c) for c in ("WRIT-ER10-0000", "WRIT-ER20-0000")]
    all_ids = [i.id for c in cases if c is not None for i in store.list_items(c.id)]
    assert len(all_ids) == 100
    assert store.active_items(all_ids) == live


# -- audit


def test_audit_rows_never_hold_hash_values(backend: Backend, store: Store, case_id: int) -> None:
    PARTNER = partner_key(store)
    photos = [image(), image()]
    (item, _) = store.add_items(case_id, photos, actor=OPERATOR).items
    store.record_feedback(item.id, True, actor=PARTNER)
    store.withdraw_item(case_id, 1, actor=OPERATOR)
    store.withdraw_case(case_id, actor=OPERATOR)
    text = repr(store.audit_log(limit=1000))
    for photo in photos:
        for h in photo.hashes:
            assert h.hex not in text
    for entry in store.audit_log(limit=1000):
        assert check_detail(entry.detail) == entry.detail
    assert [e.action for e in store.audit_log(case_id=case_id)] == [
        "case.withdraw",
        "item.withdraw",
        "match.report",
        "case.enroll",
        "case.create",
    ]
    page = store.audit_log(case_id=case_id, before=store.audit_log(case_id=case_id)[1].id, limit=2)
    assert [e.action for e in page] == ["match.report", "case.enroll"]


# -- the allowlist


def _allowlisted(store: Store) -> dict[int, tuple[str, bytes]]:
    codes = store.allowlist_codes()
    return {
        int(i): (chunk.signal, code.tobytes())
        for chunk in codes.chunks
        for i, code in zip(chunk.ids, chunk.codes, strict=True)
    }


def test_allowlist_entries_are_added_once_listed_without_values_and_versioned(
    store: Store,
) -> None:
    assert store.allowlist_version() == 0
    assert store.list_allowlist() == [] and store.allowlist_codes().chunks == []
    meme, flat = pdq(), Hash(PHASH, os.urandom(8))
    added = store.add_allowlist_entries(
        [meme, flat, meme], label="meme", source=AllowlistSource.ADMIN, actor=OPERATOR
    )
    assert (added.added, added.existing, added.version) == (2, 1, 1)
    assert store.allowlist_version() == 1
    again = store.add_allowlist_entries(
        [meme], label="again", source=AllowlistSource.ADMIN, actor=OPERATOR
    )
    # Nothing new: the version stays, so no replica reloads for nothing.
    assert (again.added, again.existing, again.version) == (0, 1, 1)
    listed = store.list_allowlist()
    assert [(e.signal, e.label, e.source) for e in listed] == [
        ("pdq", "meme", AllowlistSource.ADMIN),
        ("phash", "meme", AllowlistSource.ADMIN),
    ]
    assert [e.id for e in listed] == [e.id for e in added.entries]
    assert meme.hex not in repr(listed) and flat.hex not in repr(listed)
    codes = store.allowlist_codes()
    assert codes.version == 1
    assert _allowlisted(store) == {
        listed[0].id: ("pdq", meme.value),
        listed[1].id: ("phash", flat.value),
    }
    with pytest.raises(InvalidInput):
        store.add_allowlist_entries([], label="x", source=AllowlistSource.ADMIN, actor=OPERATOR)


def test_removing_an_allowlist_entry_bumps_the_version_and_is_seen_elsewhere(
    backend: Backend, store: Store
) -> None:
    one, two = pdq(), pdq()
    added = store.add_allowlist_entries(
        [one, two], label="pair", source=AllowlistSource.ADMIN, actor=OPERATOR
    )
    other = backend.store()  # another process or replica
    assert other.allowlist_version() == added.version
    gone = store.remove_allowlist_entry(added.entries[0].id, actor=OPERATOR)
    assert gone.id == added.entries[0].id and gone.label == "pair"
    assert other.allowlist_version() == added.version + 1
    assert _allowlisted(other) == {added.entries[1].id: ("pdq", two.value)}
    with pytest.raises(NotFound):
        store.remove_allowlist_entry(added.entries[0].id, actor=OPERATOR)
    # Ids are not reused: the same value added again is a new entry.
    back = store.add_allowlist_entries(
        [one], label="back", source=AllowlistSource.ADMIN, actor=OPERATOR
    )
    assert back.entries[0].id > added.entries[1].id


def test_the_seed_is_added_once_and_again_only_when_asked(backend: Backend, store: Store) -> None:
    seed = [(pdq(), "grid"), (Hash(PHASH, bytes(8)), "uniform")]
    first = store.seed_allowlist(seed, actor=OPERATOR)
    assert first is not None and first.added == 2
    assert [e.source for e in store.list_allowlist()] == ["seed", "seed"]
    # An operator removes an entry: a later start (any replica) does not bring it back.
    store.remove_allowlist_entry(first.entries[0].id, actor=OPERATOR)
    assert backend.store().seed_allowlist(seed, actor=OPERATOR) is None
    assert len(store.list_allowlist()) == 1
    again = store.seed_allowlist(seed, actor=OPERATOR, again=True)
    assert again is not None and (again.added, again.existing) == (1, 1)
    assert [e.label for e in store.list_allowlist()] == ["uniform", "grid"]


def test_two_handles_seeding_at_once_add_the_seed_once(backend: Backend, store: Store) -> None:
    seed = [(pdq(), "stripes") for _ in range(20)]
    handles = [store, backend.store()]
    results: list[object] = []
    errors: list[BaseException] = []

    def run(handle: Store) -> None:
        try:
            results.append(handle.seed_allowlist(seed, actor=OPERATOR))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sum(r is not None for r in results) == 1
    assert len(store.list_allowlist()) == 20


def test_allowlist_audit_rows_hold_counts_and_labels_never_values(store: Store) -> None:
    values = [pdq(), pdq()]
    added = store.add_allowlist_entries(
        values, label="meme", source=AllowlistSource.ADMIN, actor=OPERATOR
    )
    store.seed_allowlist([(pdq(), "grid")], actor=OPERATOR)
    store.remove_allowlist_entry(added.entries[0].id, actor=OPERATOR)
    log = store.audit_log(limit=10)
    assert [(e.action, e.actor) for e in log[:3]] == [
        ("allowlist.remove", "operator"),
        ("allowlist.seed", "operator"),
        ("allowlist.add", "operator"),
    ]
    assert log[2].detail == {"added": 2, "existing": 0, "label": "meme", "source": "admin"}
    assert log[0].detail == {"entry": added.entries[0].id, "label": "meme", "source": "admin"}
    text = repr(log)
    assert all(h.hex not in text for h in values)


# -- threads


def test_reads_from_many_threads_while_writing(store: Store, case_id: int) -> None:
    items = store.add_items(case_id, [image(1) for _ in range(50)], actor=OPERATOR).items
    ids = [i.id for i in items]
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert set(ids) <= store.active_items([*ids, 10**9])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(30):
        store.add_items(case_id, [image(1)], actor=OPERATOR)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_case_by_id(case_id).item_count == 80  # type: ignore[union-attr]


# -- handles


def test_a_commit_is_seen_at_once_through_another_handle(
    backend: Backend, store: Store, case_id: int
) -> None:
    other = backend.store()
    (item,) = store.add_items(case_id, [image()], actor=OPERATOR).items
    assert other.active_items([item.id]) == {item.id}
    assert other.changes_since("").changes[-1].item_id == item.id
    other.withdraw_item(case_id, 1, actor=OPERATOR)
    assert store.active_items([item.id]) == set()


def test_a_closed_store_refuses_calls(backend: Backend, case_id: int) -> None:
    store = backend.open()
    store.close()
    store.close()  # twice is fine
    with pytest.raises(Unavailable):
        store.add_items(case_id, [image()], actor=OPERATOR)
    with pytest.raises(Unavailable):
        store.active_items([1])
    with pytest.raises(Unavailable):
        store.snapshot().__enter__()


# -- failed victim guesses


def test_guess_failures_count_per_key_and_bucket_across_handles_and_prune(
    backend: Backend, store: Store
) -> None:
    """Failures written through one handle (one replica) are read through another, per key
    and bucket from ``since`` on; old buckets go with the next failure."""
    other = backend.store()
    peer, case, everyone = os.urandom(16), os.urandom(16), os.urandom(16)
    assert store.guess_failures([peer, case], since=0) == {}
    store.add_guess_failure([peer, case, everyone], bucket=100, prune_before=70)
    other.add_guess_failure([peer, case, everyone], bucket=100, prune_before=70)
    other.add_guess_failure([case, everyone], bucket=101, prune_before=71)
    assert store.guess_failures([peer, case, everyone], since=90) == {
        peer: {100: 2},
        case: {100: 2, 101: 1},
        everyone: {100: 2, 101: 1},
    }
    assert other.guess_failures([case], since=101) == {case: {101: 1}}
    assert store.guess_failures([os.urandom(16)], since=0) == {}
    store.add_guess_failure([peer], bucket=140, prune_before=101)
    assert other.guess_failures([peer, case, everyone], since=0) == {
        peer: {140: 1},
        case: {101: 1},
        everyone: {101: 1},
    }


def test_guess_failures_from_many_threads_are_all_counted(backend: Backend, store: Store) -> None:
    """Replicas counting on the same keys at once (the "all" key is every failure's) lose no
    count and never deadlock."""
    shared, handles = os.urandom(16), [backend.store() for _ in range(2)]
    errors: list[BaseException] = []

    def fail(handle: Store) -> None:
        try:
            for _ in range(20):
                handle.add_guess_failure([os.urandom(16), shared], bucket=7, prune_before=0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fail, args=(h,)) for h in [*handles, *handles]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.guess_failures([shared], since=0) == {shared: {7: 80}}


# -- probing counts (``ProbeStore``): digests are made up here; ``probe_counts`` makes real ones


def near(
    digest: int, neighbours: Sequence[int], halves: tuple[int, int] = (0, 0)
) -> tuple[int, tuple[int, int], Callable[[], frozenset[int]]]:
    """A made-up near entry: by default every entry shares its halves with every other, so
    the store's half lookup finds every held row and the neighbours decide."""
    held = frozenset(neighbours)
    return (digest, halves, lambda: held)


def test_probe_near_pairs_are_found_by_their_neighbours_digests_across_handles(
    backend: Backend, store: Store
) -> None:
    """A digest is near when one of its neighbours was recorded before it (through any
    handle) within the window, or earlier in the same request; each near arrival counts."""
    other = backend.store()
    first = store.record_probes(
        7, ProbeRecord(near=[near(1, [10, 11])]), now=1000, near_since=0, edge_since=0
    )
    assert (first.near, first.near_touched, first.items, first.throttled_until) == (0, 0, {}, 0)
    second = other.record_probes(
        7, ProbeRecord(near=[near(10, [1, 12])]), now=2000, near_since=0, edge_since=0
    )
    assert (second.near, second.near_touched) == (1, 1)
    again = store.record_probes(
        7,
        ProbeRecord(near=[near(10, [1, 12]), near(20, [21])]),
        now=3000,
        near_since=0,
        edge_since=0,
    )
    # 10 is held, and near: re-sent, it counts again (as the per-replica detector counts a
    # re-sent probe); 20 is not near anything.
    assert (again.near, again.near_touched) == (2, 1)
    # In request order: 31 follows 30, its neighbour; 30 came first, so only 31 is near.
    both = other.record_probes(
        7, ProbeRecord(near=[near(30, [31]), near(31, [30])]), now=4000, near_since=0, edge_since=0
    )
    assert (both.near, both.near_touched) == (3, 1)
    # Another key shares nothing.
    assert (
        store.record_probes(
            8, ProbeRecord(near=[near(11, [1])]), now=4000, near_since=0, edge_since=0
        ).near_touched
        == 0
    )
    # Rows older than the window count as absent: 10 and 20 are out of it (31 is in).
    late = store.record_probes(
        7,
        ProbeRecord(near=[near(12, [10]), near(21, [20]), near(32, [31])]),
        now=9000,
        near_since=3500,
        edge_since=0,
    )
    assert (late.near, late.near_touched) == (2, 1)  # 31 and 32 (10 was last seen at 3000)
    # A digest seen again after its window is recorded afresh: 1, now near of 12.
    afresh = other.record_probes(
        7, ProbeRecord(near=[near(1, [12])]), now=9500, near_since=3500, edge_since=0
    )
    assert (afresh.near, afresh.near_touched) == (3, 1)


def test_probe_near_pairs_are_found_by_their_halves_in_a_request_of_thousands(
    backend: Backend, store: Store
) -> None:
    """A stream message of many hit uploads: 2,000 hashes, each with halves of its own. A held
    digest is a candidate through either half, wherever its entry falls (the first, the
    1,000th, the last); the neighbours decide among candidates; a held neighbour sharing no
    half with the entry is not a candidate (a one-bit neighbour always shares one: the
    caller's promise, ``ProbeRecord``)."""
    other = backend.store()
    held = [near(10**6 + i, [], halves=(10**6 + i, 2 * 10**6 + i)) for i in range(4)]
    other.record_probes(7, ProbeRecord(near=held), now=1000, near_since=0, edge_since=0)
    entries = [
        near(10**7 + h, [10**6 + 3], halves=(3 * 10**6 + h, 4 * 10**6 + h)) for h in range(2000)
    ]
    # Entry 0 shares held 0's first half, entry 999 held 1's second half, entry 1999 held
    # 2's first half: each has that digest among its neighbours, so each is near. Entry 500
    # shares held 3's second half but is not its neighbour: not near. Every other entry
    # lists held 3 among its neighbours but shares no half with it: not a candidate.
    entries[0] = near(10**7, [10**6], halves=(10**6, 4 * 10**6))
    entries[999] = near(10**7 + 999, [10**6 + 1], halves=(3 * 10**6 + 999, 2 * 10**6 + 1))
    entries[1999] = near(10**7 + 1999, [10**6 + 2], halves=(10**6 + 2, 4 * 10**6 + 1999))
    entries[500] = near(10**7 + 500, [], halves=(3 * 10**6 + 500, 2 * 10**6 + 3))
    tally = store.record_probes(7, ProbeRecord(near=entries), now=2000, near_since=0, edge_since=0)
    assert (tally.near, tally.near_touched) == (3, 3)
    # Found again through the halves they were recorded with: a flip of entry 999 sharing
    # its first half, and one of entry 1999 sharing its second.
    again = other.record_probes(
        7,
        ProbeRecord(
            near=[
                near(5, [10**7 + 999], halves=(3 * 10**6 + 999, 9)),
                near(6, [10**7 + 1999], halves=(8, 4 * 10**6 + 1999)),
            ]
        ),
        now=3000,
        near_since=0,
        edge_since=0,
    )
    assert (again.near, again.near_touched) == (5, 2)


def test_shared_probes_find_exactly_the_one_bit_pairs_of_real_hashes(
    backend: Backend, store: Store
) -> None:
    """The whole near check as the service makes it (``SharedProbes.record_of``, then the
    store), on real PDQ hashes (``fixtures/reencodings.txt``: 1,000 re-encodings of one
    photo, many within a few bits of each other) and on flips of them: one bit in either
    half, two bits in one half or across both, exact re-sends, and flips of flips. Each
    request's near arrivals and the key's running count equal those of a brute-force check
    of every pair's Hamming distance (what the 257 digest lookups of each hash found before
    the half digests): nothing caught before is missed, nothing more is counted."""
    from matcher.bank.probe_counts import SharedProbes
    from matcher.bank.probing import ProbeLimits

    rng = np.random.default_rng(15)
    real = [bytes.fromhex(line) for line in (FIXTURES / "reencodings.txt").read_text().split()]
    bases = [real[i] for i in rng.choice(len(real), 120, replace=False)]

    def flipped(value: bytes, *bits: int) -> bytes:
        number = int.from_bytes(value, "big")
        for bit in bits:
            number ^= 1 << bit
        return number.to_bytes(len(value), "big")

    def bit(below: int) -> int:
        return int(rng.integers(below))

    values: list[bytes] = []
    for base in bases:
        values.append(base)
        kind = bit(6)
        if kind == 0:  # one bit, anywhere
            values.append(flipped(base, bit(256)))
        elif kind == 1:  # two bits in one half: shares the other half, not near
            half = bit(2) * 128
            values.append(flipped(base, *(half + rng.choice(128, 2, replace=False)).tolist()))
        elif kind == 2:  # two bits, one per half
            values.append(flipped(base, bit(128), 128 + bit(128)))
        elif kind == 3:  # a flip, then a flip of the flip (0 or 2 bits from the base)
            one = flipped(base, bit(256))
            values += [one, flipped(one, bit(256))]
        elif kind == 4:  # re-sent
            values.append(base)
    order = rng.permutation(len(values))
    values = [values[i] for i in order]

    def distance(a: bytes, b: bytes) -> int:
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()

    shared = SharedProbes(store, store.secret_key(), ProbeLimits())
    held: set[bytes] = set()
    total = 0
    at = 0
    arrivals = 0
    while at < len(values):
        size = int(rng.integers(1, 7))
        request = values[at : at + size]
        at += size
        # Brute force, in request order, as ``ProbeStore.record_probes`` counts.
        unique = list(dict.fromkeys(request))  # ``record_of`` records a value once
        touched, earlier = 0, list[bytes]()
        for v in unique:  # a held value re-sent counts again when near, as a new one
            touched += any(distance(v, w) == 1 for w in [*held, *earlier])
            earlier.append(v)
        held.update(unique)
        total += touched
        query = Query([Hash(PDQ, v, 90) for v in request])
        hit = ItemMatch("m_1", PDQ, 10, len(request), matched=tuple(range(len(request))))
        record, _ = shared.record_of([query], [[hit]], lambda signal: 31)
        tally = store.record_probes(7, record, now=1000 + at, near_since=0, edge_since=0)
        assert (tally.near_touched, tally.near) == (touched, total)
        arrivals += touched
    assert arrivals >= 40  # the workload has near pairs to find, in both halves


def test_probe_hits_count_distinct_queries_per_item_and_their_edge(
    backend: Backend, store: Store
) -> None:
    other = backend.store()
    tally = store.record_probes(
        7,
        ProbeRecord(hits=[(5, 1, False), (5, 2, True), (5, 2, True), (6, 1, False)]),
        now=1000,
        near_since=0,
        edge_since=0,
    )
    assert tally.items == {5: (1, 2, True), 6: (0, 1, True)} and tally.near == 0
    same = other.record_probes(
        7, ProbeRecord(hits=[(5, 2, True), (6, 1, False)]), now=2000, near_since=0, edge_since=0
    )
    assert same.items == {5: (1, 2, False), 6: (0, 1, False)}  # nothing grew
    upgraded = other.record_probes(
        7, ProbeRecord(hits=[(5, 1, True)]), now=3000, near_since=0, edge_since=0
    )
    assert upgraded.items == {5: (2, 2, True)}
    assert store.record_probes(
        9, ProbeRecord(hits=[(5, 1, True)]), now=3000, near_since=0, edge_since=0
    ).items == {5: (1, 1, True)}
    # The window: only the pair refreshed at 3000 is still in it; the one at 1000 is new again.
    windowed = store.record_probes(
        7, ProbeRecord(hits=[(5, 2, False)]), now=5000, near_since=0, edge_since=2500
    )
    assert windowed.items == {5: (1, 2, True)}


def test_probe_records_of_one_key_from_many_threads_take_turns(
    backend: Backend, store: Store
) -> None:
    """Replicas recording for one key at once see each other's records: of 12 digests that
    are all each other's neighbours, recorded at once through three handles, exactly one is
    first (not near) and 11 are near, and the last tally counts them all."""
    handles = [backend.store() for _ in range(3)]
    digests = list(range(100, 112))
    tallies = []
    errors: list[BaseException] = []

    def record(handle: Store, mine: Sequence[int]) -> None:
        try:
            for d in mine:
                others = [n for n in digests if n != d]
                tallies.append(
                    handle.record_probes(
                        3, ProbeRecord(near=[near(d, others)]), now=1000, near_since=0, edge_since=0
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=record, args=(h, digests[i::3])) for i, h in enumerate(handles)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(t.near_touched for t in tallies) == 11
    assert sorted(t.near for t in tallies) == list(range(12))


def test_a_probing_throttle_is_read_with_the_policy_audited_and_reset(
    backend: Backend, store: Store
) -> None:
    key = partner_key(store)
    assert key.key_id is not None
    other = backend.store()
    assert store.key_policy(key.key_id).throttled_until is None
    until = int(time.time() * 1000) + 60_000
    store.throttle_probes(
        key.key_id, until, actor=key, detail={"key_id": key.key_id, "kind": "edge", "count": 6}
    )
    other.throttle_probes(key.key_id, until - 30_000, actor=key, detail={"key_id": key.key_id})
    seen = other.key_policy(key.key_id).throttled_until
    assert seen is not None and int(seen.timestamp() * 1000) == until  # the later one holds
    tally = other.record_probes(
        key.key_id, ProbeRecord(near=[near(1, [2])]), now=1000, near_since=0, edge_since=0
    )
    assert tally.throttled_until == until
    probes = [e for e in store.audit_log(limit=10) if e.action == "match.probe"]
    assert len(probes) == 2 and probes[-1].detail["kind"] == "edge"
    other.reset_probes(key.key_id)
    assert store.key_policy(key.key_id).throttled_until is None
    again = store.record_probes(
        key.key_id, ProbeRecord(near=[near(2, [1])]), now=2000, near_since=0, edge_since=0
    )
    assert (again.near, again.throttled_until) == (0, 0)  # its counts went too


def test_trim_probes_deletes_rows_past_their_windows(backend: Backend, store: Store) -> None:
    store.record_probes(
        4,
        ProbeRecord(near=[near(1, [2])], hits=[(5, 1, False)]),
        now=1000,
        near_since=0,
        edge_since=0,
    )
    store.record_probes(
        4,
        ProbeRecord(near=[near(2, [1])], hits=[(5, 2, False)]),
        now=5000,
        near_since=0,
        edge_since=0,
    )
    store.throttle_probes(4, 2000, actor=OPERATOR, detail={"key_id": 4})
    # near rows before 3000 (one), hits before 500 (none), the throttle over before 3000.
    assert store.trim_probes(near_before=3000, edge_before=500) == 2
    tally = backend.store().record_probes(
        4,
        ProbeRecord(near=[near(1, [2])], hits=[(5, 3, False)]),
        now=6000,
        near_since=0,
        edge_since=0,
    )
    assert (tally.near, tally.near_touched) == (2, 1)  # 1 is recorded afresh, near of 2
    assert tally.items == {5: (0, 3, True)}
