"""The bank: enroll, match and withdraw round trips over a real SQLite store and the real index."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from matcher.bank import Bank, Query
from matcher.errors import (
    Conflict,
    InvalidDistance,
    InvalidInput,
    LowQuality,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from matcher.index import Index
from matcher.principal import Principal, Role
from matcher.signals import MD5, PDQ, PHASH, Hash
from matcher.store import CaseState

OPERATOR = Principal.operator("test")
PARTNER = Principal.key(100, Role.PARTNER, org_id=None, name="platform")


def pdq(quality: int = 90) -> Hash:
    return Hash(PDQ, os.urandom(32), quality)


def flip(h: Hash, bits: int) -> Hash:
    """``h`` with its first ``bits`` bits flipped: exactly ``bits`` away."""
    n = int.from_bytes(h.value, "big") ^ (((1 << bits) - 1) << (h.signal.bits - bits))
    return Hash(h.signal, n.to_bytes(h.signal.byte_length, "big"), h.quality)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def bank(data: Path) -> Bank:
    with Bank.open(data, progress=False) as b:
        yield b


@pytest.fixture
def me(bank: Bank) -> Principal:
    org = bank.create_organisation("Helpline", by=OPERATOR)
    return Principal.key(1, Role.PRACTITIONER, org_id=org.id, name="helpline")


@pytest.fixture
def other_org(bank: Bank) -> Principal:
    org = bank.create_organisation("Other helpline", by=OPERATOR)
    return Principal.key(2, Role.PRACTITIONER, org_id=org.id, name="other")


def db_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.iterdir()) if p.is_file())


def distances(bank: Bank, *hashes: Hash, max_distance: int | None = None) -> list[int]:
    return [m.distance for m in bank.match([Query(list(hashes), max_distance)])[0]]


# -- the round trip


def test_enroll_match_withdraw(bank: Bank, me: Principal, data: Path) -> None:
    case = bank.create_case(by=me)
    a, b = pdq(), pdq()
    ph = Hash(PHASH, os.urandom(8))
    md5 = Hash(MD5, os.urandom(16))
    result = bank.enroll(case.number, [a, b, ph, md5], by=me)
    assert (result.added, result.duplicates, result.hash_count) == (4, 0, 4)

    assert distances(bank, a) == [0]
    assert distances(bank, flip(a, 31)) == [31]
    assert distances(bank, flip(a, 32)) == []
    assert distances(bank, flip(a, 20), max_distance=19) == []
    assert distances(bank, flip(a, 20), flip(ph, 9), max_distance={"pdq": 20}) == [20]
    assert distances(bank, flip(a, 20), flip(ph, 9), max_distance={"phash": 9}) == [20, 9]
    assert distances(bank, flip(ph, 8)) == [8]
    assert distances(bank, md5) == [0]
    assert distances(bank, flip(md5, 1)) == []

    status = bank.withdraw(case.number, by=me)
    assert (status.state, status.hash_count) == (CaseState.WITHDRAWN, 0)
    for h in (a, b, ph, md5):
        assert distances(bank, h) == []
    conn = sqlite3.connect(data / "matcher.db")
    assert conn.execute("SELECT count(*) FROM hashes").fetchone() == (0,)
    conn.close()
    blob = db_bytes(data)
    for h in (a, b, ph, md5):
        assert h.value not in blob and h.hex.encode() not in blob


def test_a_match_gives_an_opaque_id_that_is_stable_across_restarts(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    h = pdq()
    bank.enroll(case.number, [h], by=me)
    (match,) = bank.match([Query([h])])[0]
    assert match.signal is PDQ
    assert h.hex not in match.match_id and match.match_id.startswith("m_")
    bank.close()
    with Bank.open(data, progress=False) as again:
        assert again.match([Query([h])])[0][0].match_id == match.match_id


def test_one_query_of_many_hashes_gives_each_entry_once_best_first(
    bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    near, far = pdq(), pdq()
    ph = Hash(PHASH, os.urandom(8))
    bank.enroll(case.number, [near, far, ph], by=me)
    # Two "variants" hit the same stored entry: it comes back once, at the smaller distance.
    query = Query([flip(far, 25), flip(near, 3), flip(near, 10), flip(ph, 4)])
    got = bank.match([query, Query([pdq()])])
    assert [(m.signal.name, m.distance) for m in got[0]] == [
        ("pdq", 3),  # 3/256
        ("phash", 4),  # 4/64
        ("pdq", 25),  # 25/256
    ]
    assert got[1] == []
    assert len({m.match_id for m in got[0]}) == 3


def test_bad_queries_are_refused_with_their_field(bank: Bank) -> None:
    with pytest.raises(InvalidDistance) as err:
        bank.match([Query([pdq()]), Query([pdq()], max_distance=32)])
    assert err.value.field == "queries[1].max_distance"
    with pytest.raises(InvalidDistance):
        bank.match([Query([pdq(), Hash(PHASH, os.urandom(8))], max_distance=20)])
    with pytest.raises(InvalidDistance, match="unknown signal types: dhash"):
        bank.match([Query([pdq()], max_distance={"dhash": 3})])
    with pytest.raises(InvalidInput) as err:
        bank.match([Query([])])
    assert err.value.field == "queries[0]"
    assert bank.match([]) == []


# -- enrollment is all or nothing


def test_a_low_quality_hash_refuses_the_whole_enrollment_with_a_reason(
    bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    good = [pdq(), pdq()]
    with pytest.raises(LowQuality) as err:
        bank.enroll(case.number, [*good, pdq(quality=49)], by=me)
    assert err.value.field == "hashes[2]"
    assert "below the floor of 50" in str(err.value)
    with pytest.raises(LowQuality, match="needs its quality"):
        bank.enroll(case.number, [Hash(PDQ, os.urandom(32))], by=me)
    assert bank.case_status(case.number, by=me).hash_count == 0
    assert distances(bank, good[0]) == []
    assert bank.enroll(case.number, [pdq(quality=50)], by=me).added == 1


def test_a_failure_inside_the_transaction_commits_nothing(
    bank: Bank, me: Principal, data: Path
) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [pdq()], by=me)
    # Make the database itself fail on the third row of the next enrollment.
    conn = sqlite3.connect(data / "matcher.db")
    conn.execute(
        "CREATE TRIGGER fail_third BEFORE INSERT ON hashes "
        "WHEN (SELECT count(*) FROM hashes) >= 3 BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    conn.commit()
    hashes = [pdq(), pdq(), pdq()]
    with pytest.raises(sqlite3.IntegrityError):
        bank.enroll(case.number, hashes, by=me)
    assert conn.execute("SELECT count(*) FROM hashes").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM changes").fetchone() == (1,)
    conn.close()
    assert bank.case_status(case.number, by=me).hash_count == 1
    for h in hashes:
        assert distances(bank, h) == []


def test_enrolling_into_a_withdrawn_case_is_a_conflict(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    bank.withdraw(case.number, by=me)
    with pytest.raises(Conflict):
        bank.enroll(case.number, [pdq()], by=me)
    with pytest.raises(InvalidInput):
        bank.enroll(case.number, [], by=me)


# -- withdrawal


def test_a_stale_index_never_returns_a_withdrawn_hash(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    h = pdq()
    bank.enroll(case.number, [h], by=me)
    # A second bank on the same store withdraws: the first bank's index still holds the hash
    # (as a lagging replica's would), but the store check drops it.
    with Bank.open(data, progress=False) as replica:
        replica.withdraw(case.number, by=me)
    assert bank._index.size(PDQ) == 1
    assert distances(bank, h) == []


def test_the_victim_withdraws_with_number_and_secret(bank: Bank, me: Principal, data: Path) -> None:
    case = bank.create_case(by=me)
    h = pdq()
    bank.enroll(case.number, [h], by=me)
    assert case.secret.encode() not in db_bytes(data)
    assert case.secret not in repr(case)
    with pytest.raises(NotFound):
        bank.withdraw_with_secret(case.number, "WRONG-WRONG-WRONG-WRONG")
    with pytest.raises(NotFound):
        bank.withdraw_with_secret("ZZZZ-ZZZZ-ZZZZ", case.secret)
    assert distances(bank, h) == [0]
    typed_sloppily = case.number.lower().replace("-", " ")
    status = bank.withdraw_with_secret(typed_sloppily, case.secret.lower())
    assert status.state is CaseState.WITHDRAWN
    assert distances(bank, h) == []
    assert bank.audit_log(by=me, case=case.number)[0].actor == "victim"


def test_only_the_owning_organisation_sees_or_withdraws_a_case(
    bank: Bank, me: Principal, other_org: Principal
) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [pdq()], by=me)
    for call in (bank.case_status, bank.withdraw):
        with pytest.raises(NotFound):
            call(case.number, by=other_org)
        with pytest.raises(PermissionDenied):
            call(case.number, by=PARTNER)
    with pytest.raises(NotFound):
        bank.enroll(case.number, [pdq()], by=other_org)
    with pytest.raises(PermissionDenied):
        bank.create_case(by=PARTNER)
    assert bank.case_status(case.number, by=OPERATOR).hash_count == 1


# -- status, feedback, audit, keys


def test_status_counts_hashes_and_reported_matches(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    h = pdq()
    bank.enroll(case.number, [h, pdq(), Hash(PHASH, os.urandom(8))], by=me)
    again = bank.enroll(case.number, [h], by=me)
    assert (again.added, again.duplicates, again.hash_count) == (0, 1, 3)
    (match,) = bank.match([Query([h])])[0]
    bank.report(match.match_id, True, by=PARTNER)
    bank.report(match.match_id, False, by=PARTNER)
    bank.report(match.match_id, True, by=PARTNER)
    status = bank.case_status(case.number, by=me)
    assert status.hashes_by_signal == {"pdq": 2, "phash": 1}
    assert (status.reported_correct, status.reported_wrong, status.match_count) == (2, 1, 3)
    with pytest.raises(PermissionDenied):
        bank.report(match.match_id, True, by=me)
    with pytest.raises(InvalidInput):
        bank.report("m_nothex", True, by=PARTNER)
    bank.withdraw(case.number, by=me)
    with pytest.raises(NotFound):
        bank.report(match.match_id, True, by=PARTNER)


def test_the_audit_log_tells_who_did_what_without_values(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    hashes = [pdq() for _ in range(3)]
    bank.enroll(case.number, hashes, by=me)
    bank.withdraw(case.number, by=me)
    entries = bank.audit_log(by=me, case=case.number)
    assert [(e.action, e.actor) for e in entries] == [
        ("case.withdraw", "key:1"),
        ("case.enroll", "key:1"),
        ("case.create", "key:1"),
    ]
    assert entries[0].detail == {"removed": 3}
    page = bank.audit_log(by=me, case=case.number, before=entries[0].id, limit=1)
    assert [e.action for e in page] == ["case.enroll"]
    text = repr(bank.audit_log(by=OPERATOR, limit=1000))
    for h in hashes:
        assert h.hex not in text
    with pytest.raises(PermissionDenied):
        bank.audit_log(by=me)


def test_api_keys_authenticate_until_revoked(bank: Bank, me: Principal, data: Path) -> None:
    new = bank.create_api_key("acme", Role.PARTNER, by=OPERATOR)
    assert new.key not in repr(new)
    assert new.key.encode() not in db_bytes(data)
    principal = bank.authenticate(new.key)
    assert (principal.role, principal.key_id, principal.audit_name) == (
        Role.PARTNER,
        new.record.id,
        f"key:{new.record.id}",
    )
    practitioner = bank.create_api_key("desk", Role.PRACTITIONER, org_id=me.org_id, by=OPERATOR)
    assert bank.authenticate(practitioner.key).org_id == me.org_id
    with pytest.raises(InvalidInput):
        bank.create_api_key("desk", Role.PRACTITIONER, by=OPERATOR)
    with pytest.raises(PermissionDenied):
        bank.create_api_key("sneaky", Role.ADMIN, by=me)
    assert [k.name for k in bank.list_api_keys(by=OPERATOR)] == ["acme", "desk"]
    bank.revoke_api_key(new.record.id, by=OPERATOR)
    with pytest.raises(Unauthenticated):
        bank.authenticate(new.key)
    with pytest.raises(Unauthenticated):
        bank.authenticate("mk_" + "A" * 32)


def test_stats_for_operators(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [pdq(), pdq(), Hash(PHASH, os.urandom(8))], by=me)
    stats = bank.stats(by=OPERATOR)
    assert stats.ready and stats.load_seconds is not None
    assert (stats.indexed["pdq"], stats.indexed["phash"], stats.indexed["md5"]) == (2, 1, 0)
    assert stats.stored == {"pdq": 2, "phash": 1}
    assert stats.cases == {"active": 1}


# -- start-up


def test_start_up_rebuilds_the_index_from_the_store(data: Path, bank: Bank, me: Principal) -> None:
    kept, gone = bank.create_case(by=me), bank.create_case(by=me)
    kept_hashes = [pdq() for _ in range(50)] + [Hash(PHASH, os.urandom(8)) for _ in range(5)]
    gone_hashes = [pdq() for _ in range(5)]
    bank.enroll(kept.number, kept_hashes, by=me)
    bank.enroll(gone.number, gone_hashes, by=me)
    bank.withdraw(gone.number, by=me)
    bank.close()
    with Bank.open(data, progress=False) as again:
        assert len(again._index) == 55
        assert all(distances(again, h) == [0] for h in kept_hashes)
        assert all(distances(again, h) == [] for h in gone_hashes)


def test_not_ready_until_loaded_and_writes_made_meanwhile_are_caught_up(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    early, gone = pdq(), pdq()
    bank.enroll(case.number, [early], by=me)
    doomed = bank.create_case(by=me)
    bank.enroll(doomed.number, [gone], by=me)
    bank.close()
    with Bank.open(data, load=False, progress=False) as cold:
        assert not cold.ready
        with pytest.raises(Unavailable):
            cold.match([Query([early])])
        # Writes while not ready go to the store; loading picks them up from the change log.
        late = pdq()
        cold.enroll(case.number, [late], by=me)
        cold.withdraw(doomed.number, by=me)
        cold.start_loading()
        assert cold.wait_ready(timeout=30)
        assert distances(cold, early) == [0]
        assert distances(cold, late) == [0]
        assert distances(cold, gone) == []
        assert len(cold._index) == 2


def test_catching_up_applies_exactly_the_changes_after_the_snapshot(
    data: Path, bank: Bank, me: Principal
) -> None:
    kept, doomed = bank.create_case(by=me), bank.create_case(by=me)
    early, gone = pdq(), pdq()
    bank.enroll(kept.number, [early], by=me)
    assert bank.enroll(doomed.number, [gone], by=me).added == 1
    with bank.store.snapshot() as snap:
        mark = snap.mark
        loaded = list(snap.chunks())
    # Changes after the snapshot: one enrollment, one withdrawal of a loaded hash.
    late = pdq()
    bank.enroll(kept.number, [late], by=me)
    bank.withdraw(doomed.number, by=me)
    index = Index()
    for chunk in loaded:
        index.add_codes(PDQ, chunk.ids, chunk.codes)
    assert len(index) == 2
    new_mark = bank._catch_up(index, mark)
    assert new_mark == bank.store.changes_since(0)[-1].seq
    codes = np.frombuffer(b"".join(h.value for h in (early, gone, late)), np.uint8)
    found = [len(ids) for ids, _ in index.search(PDQ, codes.reshape(3, 32), 0)]
    assert found == [1, 0, 1]


def test_writes_racing_a_background_load_are_all_applied(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    codes = np.random.default_rng(1).integers(0, 256, (60_000, 32), dtype=np.uint8)
    bulk = [Hash(PDQ, bytes(row), 90) for row in codes]
    bank.enroll(case.number, bulk, by=me)
    victims = [bank.create_case(by=me) for _ in range(3)]
    victim_hashes = [pdq() for _ in victims]
    for v, h in zip(victims, victim_hashes, strict=True):
        bank.enroll(v.number, [h], by=me)
    bank.close()
    with Bank.open(data, load=False, progress=False) as cold:
        cold.start_loading()
        late = [pdq() for _ in range(20)]
        for i, h in enumerate(late):
            cold.enroll(case.number, [h], by=me)
            if i < len(victims):
                cold.withdraw(victims[i].number, by=me)
        assert cold.wait_ready(timeout=60)
        assert len(cold._index) == 60_000 + 20
        assert all(distances(cold, h) == [0] for h in late)
        assert all(distances(cold, h) == [] for h in victim_hashes)
        assert distances(cold, bulk[12_345]) == [0]


# -- threads


def test_concurrent_matches_enrollments_and_withdrawals(bank: Bank, me: Principal) -> None:
    stable = bank.create_case(by=me)
    stable_hashes = [pdq() for _ in range(20)]
    bank.enroll(stable.number, stable_hashes, by=me)
    errors: list[BaseException] = []
    withdrawn: list[Hash] = []
    stop = threading.Event()

    def matcher() -> None:
        try:
            while not stop.is_set():
                got = bank.match([Query([h]) for h in stable_hashes])
                assert all(len(m) == 1 for m in got)
        except BaseException as exc:
            errors.append(exc)

    def churn() -> None:
        try:
            for _ in range(10):
                case = bank.create_case(by=me)
                hashes = [pdq() for _ in range(5)]
                bank.enroll(case.number, hashes, by=me)
                bank.withdraw(case.number, by=me)
                withdrawn.extend(hashes)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=matcher) for _ in range(3)]
    writers = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert all(m == [] for m in bank.match([Query([h]) for h in withdrawn]))
    assert len(bank._index) == 20
