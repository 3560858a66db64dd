"""The bank: enroll, match and withdraw items over a real store and the real index.

Every test runs on both backends: a real SQLite data folder and a fresh database on a real
PostgreSQL server (``data`` is the folder or the database URL).
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from PIL import Image

from matcher.bank import Bank
from matcher.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from matcher.principal import Principal, Role
from matcher.records import CaseState, ItemMatch, ItemState, NewItem, Query
from matcher.signals import MD5, PDQ, PHASH, Hash

OPERATOR = Principal.operator("test")
Distance = int | Mapping[str, int] | None
PARTNER = Principal.key(100, Role.PARTNER, org_id=None, name="platform")


def pdq(quality: int = 90) -> Hash:
    return Hash(PDQ, os.urandom(32), quality)


def flip(h: Hash, bits: int) -> Hash:
    """``h`` with its first ``bits`` bits flipped: exactly ``bits`` away."""
    n = int.from_bytes(h.value, "big") ^ (((1 << bits) - 1) << (h.signal.bits - bits))
    return Hash(h.signal, n.to_bytes(h.signal.byte_length, "big"), h.quality)


def photo(n: int = 3) -> NewItem:
    """An item like an enrolled image: ``n`` PDQ views, a pHash and an MD5."""
    return NewItem(
        [pdq() for _ in range(n)] + [Hash(PHASH, os.urandom(8)), Hash(MD5, os.urandom(16))]
    )


@pytest.fixture(params=["sqlite", "postgres"])
def data(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The store: a SQLite data folder, or (typed alike, it is a URL) a PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")  # type: ignore[no-any-return]
    return tmp_path / "data"


def sqlite_only(data: Path) -> None:
    if isinstance(data, str):
        pytest.skip("reaches into the SQLite file itself (PostgreSQL: tests/store)")


def hash_rows(data: Path) -> int:
    """How many rows holding hash values the store has, read directly from the database (one
    sealed blob per item, on both backends)."""
    if isinstance(data, str):
        import psycopg

        with psycopg.connect(data) as conn:
            return int(conn.execute("SELECT count(*) FROM item_codes").fetchone()[0])  # type: ignore[index]
    conn = sqlite3.connect(data / "matcher.db")
    try:
        return int(conn.execute("SELECT count(*) FROM item_codes").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def bank(data: Path) -> Iterator[Bank]:
    with Bank.open(data) as b:
        yield b


@pytest.fixture
def partner(bank: Bank) -> Principal:
    """A real partner key: a verdict names its key."""
    record = bank.accounts.create_api_key("platform", Role.PARTNER, by=OPERATOR).record
    return Principal.key(record.id, Role.PARTNER, name="platform")


@pytest.fixture
def me(bank: Bank) -> Principal:
    org = bank.accounts.create_organisation("Helpline", by=OPERATOR)
    return Principal.key(1, Role.PRACTITIONER, org_id=org.id, name="helpline")


@pytest.fixture
def other_org(bank: Bank) -> Principal:
    org = bank.accounts.create_organisation("Other helpline", by=OPERATOR)
    return Principal.key(2, Role.PRACTITIONER, org_id=org.id, name="other")


def file_bytes(data: Path) -> bytes:
    """Every file of the data folder as it is on disk: the database, its WAL and shm. On
    PostgreSQL, every row of every table (what SQL access, a dump or a backup sees; its files
    are ``matcher.store.postgres``'s "Withdrawal")."""
    if isinstance(data, str):
        import psycopg

        out = bytearray()
        with psycopg.connect(data, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
            for (table,) in tables:
                with conn.cursor() as cur, cur.copy(f"COPY {table} TO STDOUT (FORMAT binary)") as c:
                    for block in c:
                        out += block
        return bytes(out)
    return b"".join(p.read_bytes() for p in sorted(data.iterdir()) if p.is_file())


def sealed_items(data: Path) -> int:
    """How many items' sealed codes the database holds (on both backends)."""
    if isinstance(data, str):
        import psycopg

        with psycopg.connect(data) as conn:
            row = conn.execute("SELECT count(*) FROM item_codes").fetchone()
            return int(row[0])  # type: ignore[index]
    conn = sqlite3.connect(data / "matcher.db")
    try:
        return int(conn.execute("SELECT count(*) FROM item_codes").fetchone()[0])
    finally:
        conn.close()


def matches(bank: Bank, *hashes: Hash, max_distance: Distance = None) -> list[ItemMatch]:
    return bank.match([Query(list(hashes), max_distance)])[0]


def distances(bank: Bank, *hashes: Hash, max_distance: Distance = None) -> list[int]:
    return [m.distance for m in matches(bank, *hashes, max_distance=max_distance)]


# -- the round trip


def test_enroll_match_withdraw(bank: Bank, me: Principal, data: Path) -> None:
    case = bank.create_case(by=me)
    a, b = pdq(), pdq()
    ph = Hash(PHASH, os.urandom(8))
    md5 = Hash(MD5, os.urandom(16))
    result = bank.enroll(case.number, [NewItem([a, ph]), NewItem([b]), NewItem([md5])], by=me)
    assert (result.added, result.existing, result.item_count, result.hash_count) == (3, 0, 3, 4)
    assert [(i.number, i.hash_count, i.state) for i in result.items] == [
        (1, 2, ItemState.ACTIVE),
        (2, 1, ItemState.ACTIVE),
        (3, 1, ItemState.ACTIVE),
    ]
    assert result.items[0].name == f"cases/{case.number}/items/1"

    assert distances(bank, a) == [0]
    assert distances(bank, flip(a, 31)) == [31]
    assert distances(bank, flip(a, 32)) == []
    assert distances(bank, flip(a, 20), max_distance=19) == []
    assert distances(bank, flip(b, 20), flip(ph, 9), max_distance={"pdq": 20}) == [20]
    assert distances(bank, flip(b, 20), flip(ph, 9), max_distance={"phash": 9}) == [20, 9]
    assert distances(bank, flip(ph, 8)) == [8]
    assert distances(bank, md5) == [0]
    assert distances(bank, flip(md5, 1)) == []

    status = bank.withdraw(case.number, by=me)
    assert (status.state, status.item_count, status.hash_count) == (CaseState.WITHDRAWN, 0, 0)
    for h in (a, b, ph, md5):
        assert distances(bank, h) == []
    assert hash_rows(data) == 0
    blob = file_bytes(data)
    for h in (a, b, ph, md5):
        assert h.value not in blob and h.hex.encode() not in blob


def test_one_result_per_item_with_its_best_hit_and_hit_count(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    near, far = pdq(), pdq()
    ph = Hash(PHASH, os.urandom(8))
    other = pdq()
    bank.enroll(case.number, [NewItem([near, far, ph]), NewItem([other])], by=me)
    # Four hashes of one query hit the first item (two of them the same stored hash), one
    # hits the second: one result each, the first with its closest hit and 4 hits.
    query = Query([flip(far, 25), flip(near, 3), flip(near, 10), flip(ph, 4), flip(other, 30)])
    got, nothing = bank.match([query, Query([pdq()])])
    assert [(m.signal, m.distance, m.hits) for m in got] == [(PDQ, 3, 4), (PDQ, 30, 1)]
    assert nothing == []
    assert len({m.item_id for m in got}) == 2
    # Closest relative to each signal's length: pHash 1/64 beats PDQ 5/256.
    (best,) = matches(bank, flip(near, 5), flip(ph, 1))
    assert (best.signal, best.distance, best.hits) == (PHASH, 1, 2)
    assert bank.match([]) == []


def test_an_item_id_is_opaque_and_stable_across_restarts(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    h = pdq()
    bank.enroll(case.number, [NewItem([h, pdq()])], by=me)
    (match,) = matches(bank, h)
    assert re.fullmatch(r"m_[0-9a-f]{16}", match.item_id) and h.hex not in match.item_id
    bank.close()
    with Bank.open(data) as again:
        assert matches(again, h)[0].item_id == match.item_id


def test_an_edited_upload_gives_one_result_against_the_shipped_profiles(
    bank: Bank, me: Principal, partner: Principal, astronaut: Image.Image, coffee: Image.Image
) -> None:
    """An image enrolled with the ``enroll`` profile (up to 99 views), queried with the ``query``
    profile's views of an edited copy (~40 hashes): exactly one result, the image's item."""
    from matcher.hashing import enroll_views, phash, query_views

    def enrolled(image: Image.Image) -> NewItem:
        views = [h for _, h in enroll_views(image) if h.signal.meets_floor(h.quality)]
        return NewItem([*views, phash(image)])

    case = bank.create_case(by=me)
    result = bank.enroll(case.number, [enrolled(astronaut), enrolled(coffee)], by=me)
    assert result.added == 2 and result.items[0].hash_count > 90
    w, h = astronaut.size

    def upload(edited: Image.Image) -> Query:
        buffer = io.BytesIO()
        edited.save(buffer, "JPEG", quality=60)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        return Query([v for _, v in query_views(image)] + [phash(image)])

    # A repost with a white frame: a dozen of its views hit the image's views.
    framed = Image.new("RGB", (w + 80, h + 80), (255, 255, 255))
    framed.paste(astronaut, (40, 40))
    # A 90% off-centre crop, mirrored and shrunk: one view still hits.
    cropped = astronaut.crop((0, int(h * 0.06), int(w * 0.9), int(h * 0.96)))
    cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((300, 300))
    queries = [upload(framed), upload(cropped)]
    assert all(len(q.hashes) > 20 for q in queries)
    (match,), (also,) = bank.match(queries)
    assert match.hits >= 10  # many views hit the one item: still one result
    assert also.item_id == match.item_id
    status = bank.case_status(case.number, by=me)
    bank.report(match.item_id, True, by=partner)
    after = bank.case_status(case.number, by=me)
    assert [i.reported_correct for i in after.items] == [1, 0]
    assert status.items[0].reported_correct == 0


# -- enrollment


def test_a_retried_enrollment_adds_nothing_twice(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    items = [photo(), photo()]
    first = bank.enroll(case.number, items, by=me)
    again = bank.enroll(case.number, [items[1], photo(), items[0]], by=me)
    assert (again.added, again.existing, again.item_count) == (1, 2, 3)
    assert [i.number for i in again.items] == [2, 3, 1]
    assert again.items[0] == first.items[1]
    assert len(bank.follower.index) == 15


def test_a_failure_inside_the_transaction_commits_nothing(
    bank: Bank, me: Principal, data: Path
) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [NewItem([pdq()])], by=me)
    sqlite_only(data)
    # Make the database itself fail on the third item row of the next enrollment.
    conn = sqlite3.connect(data / "matcher.db")
    conn.execute(
        "CREATE TRIGGER fail_third BEFORE INSERT ON item_codes "
        "WHEN (SELECT count(*) FROM item_codes) >= 2 BEGIN SELECT RAISE(ABORT, 'disk says no'); "
        "END"
    )
    conn.commit()
    hashes = [pdq(), pdq(), pdq()]
    with pytest.raises(sqlite3.IntegrityError):
        bank.enroll(case.number, [NewItem(hashes[:1]), NewItem(hashes[1:])], by=me)
    assert conn.execute("SELECT count(*) FROM item_codes").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM changes").fetchone() == (1,)
    conn.close()
    assert bank.case_status(case.number, by=me).item_count == 1
    for h in hashes:
        assert distances(bank, h) == []


def test_enrolling_into_a_withdrawn_case_is_a_conflict(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    with pytest.raises(InvalidInput):
        bank.enroll(case.number, [], by=me)
    bank.withdraw(case.number, by=me)
    with pytest.raises(Conflict):
        bank.enroll(case.number, [photo()], by=me)


# -- withdrawal


def test_a_practitioner_withdraws_one_item_and_the_others_still_match(
    bank: Bank, me: Principal, data: Path
) -> None:
    case = bank.create_case(by=me)
    kept, gone = photo(), NewItem(photo().hashes, label="photo 2")
    bank.enroll(case.number, [kept, gone], by=me)
    assert b"photo 2" in file_bytes(data)
    item = bank.withdraw_item(case.number, 2, by=me)
    assert (item.number, item.state, item.label, item.hash_count) == (2, "withdrawn", None, 0)
    assert item.withdrawn_at is not None
    assert all(matches(bank, h) == [] for h in gone.hashes)
    assert all(len(matches(bank, h)) == 1 for h in kept.hashes)
    blob = file_bytes(data)  # the database file and its WAL, the store still open
    for h in gone.hashes:
        assert h.value not in blob and h.hex.encode() not in blob
    assert b"photo 2" not in blob
    assert sealed_items(data) == 1  # the kept item, sealed (no value is ever in clear)
    status = bank.case_status(case.number, by=me)
    assert (status.state, status.item_count, status.hash_count) == ("active", 1, 5)
    assert [(i.number, i.state) for i in status.items] == [(1, "active"), (2, "withdrawn")]
    assert bank.withdraw_item(case.number, 2, by=me) == item  # idempotent
    with pytest.raises(NotFound):
        bank.withdraw_item(case.number, 3, by=me)
    assert len(bank.follower.index) == 5


def test_the_victim_withdraws_one_item_with_number_and_secret(
    bank: Bank, me: Principal, data: Path
) -> None:
    case = bank.create_case(by=me)
    kept, gone = photo(), photo()
    bank.enroll(case.number, [kept, gone], by=me)
    # A wrong secret, a wrong case number and a wrong item number look alike.
    errors = []
    for number, secret, wrong in (
        (case.number, "WRONG-WRONG-WRONG-WRONG", 2),
        ("ZZZZ-ZZZZ-ZZZZ", case.secret, 2),
        (case.number, case.secret, 9),
    ):
        with pytest.raises(NotFound) as err:
            bank.withdraw_item_with_secret(number, secret, wrong)
        errors.append(str(err.value))
    assert len(set(errors)) == 1
    assert all(len(matches(bank, h)) == 1 for h in gone.hashes)
    typed_sloppily = case.number.lower().replace("-", " ")
    item = bank.withdraw_item_with_secret(typed_sloppily, case.secret.lower(), 2)
    assert item.state is ItemState.WITHDRAWN
    assert all(matches(bank, h) == [] for h in gone.hashes)
    assert all(len(matches(bank, h)) == 1 for h in kept.hashes)
    blob = file_bytes(data)
    assert all(h.value not in blob for h in gone.hashes)
    assert sealed_items(data) == 1  # the kept item, sealed (no value is ever in clear)
    status = bank.case_status_with_secret(case.number, case.secret)
    assert [i.state for i in status.items] == ["active", "withdrawn"]
    assert bank.audit_log(by=me, case=case.number)[0].actor == "victim"


def test_the_victim_sees_and_withdraws_the_case_with_number_and_secret(
    bank: Bank, me: Principal, data: Path
) -> None:
    case = bank.create_case(by=me)
    item = photo()
    bank.enroll(case.number, [item], by=me)
    assert case.secret.encode() not in file_bytes(data)
    assert case.secret not in repr(case)
    for number, secret in (
        (case.number, "WRONG-WRONG-WRONG-WRONG"),
        ("ZZZZ-ZZZZ-ZZZZ", case.secret),
    ):
        with pytest.raises(NotFound):
            bank.withdraw_with_secret(number, secret)
        with pytest.raises(NotFound):
            bank.case_status_with_secret(number, secret)
    assert bank.case_status_with_secret(case.number, case.secret).item_count == 1
    status = bank.withdraw_with_secret(case.number.lower(), case.secret)
    assert status.state is CaseState.WITHDRAWN
    assert all(matches(bank, h) == [] for h in item.hashes)


def test_a_stale_index_never_returns_a_withdrawn_item(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    one, two = photo(), photo()
    bank.enroll(case.number, [one, two], by=me)
    # A second bank on the same store withdraws: the first bank's index still holds the items
    # (as a lagging replica's would), but the store check drops the withdrawn ones.
    with Bank.open(data, load=False) as replica:
        replica.withdraw_item(case.number, 1, by=me)
    assert len(bank.follower.index) == 10
    assert matches(bank, one.hashes[0]) == []
    assert len(matches(bank, two.hashes[0])) == 1
    assert bank.follower.catch_up() == 1 and len(bank.follower.index) == 5


def test_only_the_owning_organisation_sees_or_withdraws_a_case(
    bank: Bank, me: Principal, other_org: Principal
) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [photo()], by=me)
    for call in (bank.case_status, bank.withdraw):
        with pytest.raises(NotFound):
            call(case.number, by=other_org)
        with pytest.raises(PermissionDenied):
            call(case.number, by=PARTNER)
    with pytest.raises(NotFound):
        bank.withdraw_item(case.number, 1, by=other_org)
    with pytest.raises(PermissionDenied):
        bank.withdraw_item(case.number, 1, by=PARTNER)
    with pytest.raises(NotFound):
        bank.enroll(case.number, [photo()], by=other_org)
    with pytest.raises(PermissionDenied):
        bank.create_case(by=PARTNER)
    assert bank.case_status(case.number, by=OPERATOR).hash_count == 5


# -- status, feedback, audit, keys


def test_status_lists_items_with_counts_and_never_a_hash_value(
    bank: Bank, me: Principal, partner: Principal
) -> None:
    case = bank.create_case(by=me)
    first, second = photo(2), NewItem([pdq()], label="screenshot")
    bank.enroll(case.number, [first, second], by=me)
    (match,) = matches(bank, first.hashes[0])
    # One partner changing its mind counts once, with its last verdict; another partner
    # counts on its own.
    bank.report(match.item_id, True, by=partner)
    bank.report(match.item_id, False, by=partner)
    bank.report(match.item_id, True, by=partner)
    other = bank.accounts.create_api_key("other", Role.PARTNER, by=OPERATOR).record
    bank.report(match.item_id, False, by=Principal.key(other.id, Role.PARTNER))
    status = bank.case_status(case.number, by=me)
    assert status.hashes_by_signal == {"pdq": 3, "phash": 1, "md5": 1}
    assert (status.item_count, status.hash_count) == (2, 5)
    assert (status.reported_correct, status.reported_wrong, status.match_count) == (1, 1, 2)
    one, two = status.items
    assert (one.number, one.hash_count, one.hashes_by_signal, one.match_count) == (
        1,
        4,
        {"pdq": 2, "phash": 1, "md5": 1},
        2,
    )
    assert (two.label, two.hash_count, two.match_count) == ("screenshot", 1, 0)
    text = repr(status)
    assert all(h.hex not in text for h in (*first.hashes, *second.hashes))
    with pytest.raises(PermissionDenied):
        bank.report(match.item_id, True, by=me)
    with pytest.raises(NotFound):
        bank.report("m_nothex", True, by=partner)
    with pytest.raises(NotFound):
        bank.report("m_" + "f" * 16, True, by=partner)
    bank.withdraw_item(case.number, 1, by=me)
    with pytest.raises(NotFound):
        bank.report(match.item_id, True, by=partner)
    # The case keeps the counts of its withdrawn items.
    assert bank.case_status(case.number, by=me).match_count == 2


def test_the_audit_log_tells_who_did_what_without_values(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    items = [photo(), photo()]
    bank.enroll(case.number, items, by=me)
    bank.withdraw_item(case.number, 2, by=me)
    bank.withdraw(case.number, by=me)
    entries = bank.audit_log(by=me, case=case.number)
    assert [(e.action, e.actor) for e in entries] == [
        ("case.withdraw", "key:1"),
        ("item.withdraw", "key:1"),
        ("case.enroll", "key:1"),
        ("case.create", "key:1"),
    ]
    assert entries[0].detail == {"items": 1, "removed": 5}
    assert entries[1].detail == {"item": 2, "removed": 5}
    page = bank.audit_log(by=me, case=case.number, before=entries[1].id, limit=1)
    assert [e.action for e in page] == ["case.enroll"]
    text = repr(bank.audit_log(by=OPERATOR, limit=1000))
    for item in items:
        assert all(h.hex not in text for h in item.hashes)
    with pytest.raises(PermissionDenied):
        bank.audit_log(by=me)


def test_api_keys_authenticate_until_revoked(bank: Bank, me: Principal, data: Path) -> None:
    accounts = bank.accounts
    new = accounts.create_api_key("acme", Role.PARTNER, by=OPERATOR)
    assert new.key not in repr(new)
    assert new.key.encode() not in file_bytes(data)
    principal = accounts.authenticate(new.key)
    assert (principal.role, principal.key_id, principal.audit_name) == (
        Role.PARTNER,
        new.record.id,
        f"key:{new.record.id}",
    )
    practitioner = accounts.create_api_key("desk", Role.PRACTITIONER, org_id=me.org_id, by=OPERATOR)
    assert accounts.authenticate(practitioner.key).org_id == me.org_id
    with pytest.raises(InvalidInput):
        accounts.create_api_key("desk", Role.PRACTITIONER, by=OPERATOR)
    with pytest.raises(NotFound):
        accounts.create_api_key("desk", Role.PARTNER, org_id=999, by=OPERATOR)
    with pytest.raises(PermissionDenied):
        accounts.create_api_key("sneaky", Role.ADMIN, by=me)
    assert [k.name for k in accounts.list_api_keys(by=OPERATOR)] == ["acme", "desk"]
    accounts.revoke_api_key(new.record.id, by=OPERATOR)
    with pytest.raises(Unauthenticated):
        accounts.authenticate(new.key)
    with pytest.raises(Unauthenticated):
        accounts.authenticate("mk_" + "A" * 32)


def test_organisations_are_for_admins(bank: Bank, me: Principal) -> None:
    accounts = bank.accounts
    org = accounts.get_organisation(me.org_id, by=OPERATOR)  # type: ignore[arg-type]
    assert org.name == "Helpline"
    assert accounts.list_organisations(by=OPERATOR) == [org]
    with pytest.raises(NotFound):
        accounts.get_organisation(999, by=OPERATOR)
    with pytest.raises(InvalidInput):
        accounts.create_organisation("  ", by=OPERATOR)
    with pytest.raises(Conflict):
        accounts.create_organisation("Helpline", by=OPERATOR)
    with pytest.raises(PermissionDenied):
        accounts.list_organisations(by=me)


def test_stats_for_operators(bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [NewItem([pdq(), pdq(), Hash(PHASH, os.urandom(8))]), photo(1)], by=me)
    stats = bank.stats(by=OPERATOR)
    assert stats.ready and stats.load_seconds is not None
    assert (stats.indexed["pdq"], stats.indexed["phash"], stats.indexed["md5"]) == (3, 2, 1)
    assert stats.stored == {"pdq": 3, "phash": 2, "md5": 1}
    assert (stats.cases, stats.items) == ({"active": 1}, 2)
    with pytest.raises(PermissionDenied):
        bank.stats(by=me)


# -- start-up


def test_start_up_rebuilds_the_index_from_the_store(data: Path, bank: Bank, me: Principal) -> None:
    kept, gone = bank.create_case(by=me), bank.create_case(by=me)
    kept_items = [photo(10) for _ in range(5)]
    gone_items = [photo(1)]
    bank.enroll(kept.number, kept_items, by=me)
    bank.enroll(gone.number, gone_items, by=me)
    bank.withdraw_item(kept.number, 3, by=me)
    bank.withdraw(gone.number, by=me)
    bank.close()
    with Bank.open(data) as again:
        assert len(again.follower.index) == 4 * 12
        for n, item in enumerate(kept_items, start=1):
            assert all(len(matches(again, h)) == (n != 3) for h in item.hashes)
        assert all(matches(again, h) == [] for h in gone_items[0].hashes)


def test_not_ready_until_loaded_and_writes_made_meanwhile_are_caught_up(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    early, gone = photo(), photo()
    bank.enroll(case.number, [early], by=me)
    doomed = bank.create_case(by=me)
    bank.enroll(doomed.number, [gone], by=me)
    bank.close()
    with Bank.open(data, load=False) as cold:
        assert not cold.ready
        with pytest.raises(Unavailable):
            cold.match([Query(early.hashes)])
        # Writes while not ready go to the store; loading picks them up from the change log.
        late = photo()
        cold.enroll(case.number, [late], by=me)
        cold.withdraw(doomed.number, by=me)
        cold.start_loading()
        assert cold.wait_ready(timeout=60)
        assert len(matches(cold, *early.hashes)) == 1
        assert len(matches(cold, *late.hashes)) == 1
        assert matches(cold, *gone.hashes) == []
        assert len(cold.follower.index) == 10


def test_progress_is_a_callback(data: Path, bank: Bank, me: Principal) -> None:
    case = bank.create_case(by=me)
    bank.enroll(case.number, [photo(100) for _ in range(3)], by=me)
    bank.close()
    seen: list[tuple[int, int]] = []
    with Bank.open(data, load=False) as cold:
        cold.load(progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 306) and seen[-1] == (306, 306)


def test_a_failed_load_is_reported_by_wait_ready(data: Path, bank: Bank, me: Principal) -> None:
    bank.close()
    cold = Bank.open(data, load=False)
    cold.close()  # loading from a closed store fails
    cold.start_loading()
    with pytest.raises(Unavailable, match="loading the index failed"):
        cold.wait_ready(timeout=30)


def test_writes_racing_a_background_load_are_all_applied(
    data: Path, bank: Bank, me: Principal
) -> None:
    case = bank.create_case(by=me)
    bulk = [NewItem([pdq() for _ in range(2_000)]) for _ in range(30)]
    bank.enroll(case.number, bulk, by=me)
    victims = [bank.create_case(by=me) for _ in range(3)]
    victim_items = [photo(1) for _ in victims]
    for v, item in zip(victims, victim_items, strict=True):
        bank.enroll(v.number, [item], by=me)
    bank.close()
    with Bank.open(data, load=False) as cold:
        cold.start_loading()
        late = [photo(1) for _ in range(20)]
        for i, item in enumerate(late):
            cold.enroll(case.number, [item], by=me)
            if i < len(victims):
                cold.withdraw(victims[i].number, by=me)
        assert cold.wait_ready(timeout=60)
        assert len(cold.follower.index) == 60_000 + 20 * 3
        assert all(len(matches(cold, *item.hashes)) == 1 for item in late)
        assert all(matches(cold, *item.hashes) == [] for item in victim_items)
        assert len(matches(cold, bulk[12].hashes[345])) == 1


# -- threads


def test_concurrent_matches_enrollments_and_withdrawals(bank: Bank, me: Principal) -> None:
    stable = bank.create_case(by=me)
    stable_items = [photo(2) for _ in range(20)]
    bank.enroll(stable.number, stable_items, by=me)
    errors: list[BaseException] = []
    withdrawn: list[NewItem] = []
    stop = threading.Event()

    def matcher() -> None:
        try:
            while not stop.is_set():
                got = bank.match([Query(item.hashes) for item in stable_items])
                assert all(len(m) == 1 for m in got)
        except BaseException as exc:
            errors.append(exc)

    def churn() -> None:
        try:
            for i in range(10):
                case = bank.create_case(by=me)
                items = [photo(2) for _ in range(3)]
                bank.enroll(case.number, items, by=me)
                if i % 2:
                    bank.withdraw(case.number, by=me)
                    withdrawn.extend(items)
                else:
                    for n in (1, 2, 3):
                        bank.withdraw_item(case.number, n, by=me)
                    withdrawn.extend(items)
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
    assert all(m == [] for m in bank.match([Query(item.hashes) for item in withdrawn]))
    assert len(bank.follower.index) == 20 * 4


# -- what opening costs


def test_accounts_import_no_index_and_an_unloaded_bank_compiles_nothing(data: Path) -> None:
    """``matcher keys create`` opens ``Accounts``: no index module, no numba. ``Bank.open(...,
    load=False)`` (what ``matcher serve`` does before opening its port) compiles nothing."""
    script = f"""
import sys
from matcher.bank import Accounts
from matcher.principal import Principal, Role
with Accounts.open({str(data)!r}) as accounts:
    key = accounts.create_api_key("ops", Role.ADMIN, by=Principal.operator())
    assert accounts.authenticate(key.key).role is Role.ADMIN
assert "matcher.index" not in sys.modules and "numba" not in sys.modules, "index imported"
from matcher.bank import Bank
import matcher.index
with Bank.open({str(data)!r}, load=False) as bank:
    assert not bank.ready
assert not matcher.index._warm, "kernels compiled"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
