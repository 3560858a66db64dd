"""A data folder made by the schema-1 code opens, migrates to items, and still matches.

``tests/fixtures/v1-data`` was written by matcher before items existed (see its
``manifest.json`` and ``tests/fixtures/make_v1_data.py``): case A holds scikit-image's
astronaut (enroll profile, one call) and coffee (plain, a second call) and one "correct"
report; case B held chelsea and was withdrawn. The images are hashed again here with today's
``matcher.hashing``, so the test checks what a partner would see after an upgrade.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.records import ItemState, NewItem, Query
from matcher.signals import PDQ, Hash
from matcher.store import SQLiteStore
from matcher.store.sqlite import DB_FILENAME
from matcher.store.sqlite_schema import MIGRATIONS

FIXTURE = Path(__file__).parent / "fixtures" / "v1-data"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())
OPERATOR = Principal.operator("test")
PARTNER = Principal.key(2, Role.PARTNER)


def png(name: str) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(getattr(data, name)())).save(buffer, "PNG")
    return buffer.getvalue()


def hashes_of(name: str, profile: str) -> list[Hash]:
    """What the fixture's maker sent for an image: pHash, digests and the profile's views."""
    from matcher.hashing import decode_image, enroll_views, hash_bytes, query_views
    from matcher.hashing.views import ENROLL_WIDE

    raw = png(name)
    plain, _ = hash_bytes(raw, signals=("pdq", "phash", "md5", "sha256"))
    image = decode_image(raw)
    views = []
    if profile == "enroll-wide":
        views = enroll_views(image, ENROLL_WIDE)
    elif profile == "query":
        views = query_views(image)
    out = list(plain.values()) + [h for _, h in views]
    return list({(h.signal.name, h.value): h for h in out}.values())


def file_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def v1_values(case_number: str) -> set[bytes]:
    """The hash values the v1 file holds for a case, read straight from the fixture."""
    conn = sqlite3.connect(f"file:{FIXTURE / DB_FILENAME}?mode=ro&immutable=1", uri=True)
    try:
        rows = conn.execute(
            "SELECT h.value FROM hashes h JOIN cases c ON c.id = h.case_id WHERE c.number = ?",
            (case_number,),
        ).fetchall()
    finally:
        conn.close()
    return {bytes(r[0]) for r in rows}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A copy of the fixture (the committed one is never written to)."""
    folder = tmp_path / "data"
    shutil.copytree(FIXTURE, folder)
    (folder / "manifest.json").unlink()
    return folder


@pytest.fixture
def bank(data: Path) -> Iterator[Bank]:
    with Bank.open(data) as b:
        yield b


ACTIVE = MANIFEST["cases"]["active"]
WITHDRAWN = MANIFEST["cases"]["withdrawn"]


def test_the_fixture_is_schema_1() -> None:
    conn = sqlite3.connect(f"file:{FIXTURE / DB_FILENAME}?mode=ro&immutable=1", uri=True)
    try:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    finally:
        conn.close()


def test_each_v1_enrollment_call_becomes_one_item(data: Path, bank: Bank) -> None:
    assert bank.store.schema_version == 6  # type: ignore[attr-defined]
    status = bank.case_status(ACTIVE["number"], by=OPERATOR)
    astronaut, coffee = status.items
    assert (astronaut.number, astronaut.hash_count) == (1, ACTIVE["calls"][0]["hashes"])
    assert astronaut.hashes_by_signal == {"pdq": 223, "phash": 1, "md5": 1, "sha256": 1}
    assert (coffee.number, coffee.hash_count) == (2, ACTIVE["calls"][1]["hashes"])
    assert all(i.state is ItemState.ACTIVE and i.label is None for i in status.items)
    assert (status.item_count, status.hash_count) == (2, 230)
    # The v1 report goes to the case's first item; the case's count is unchanged.
    assert (astronaut.reported_correct, coffee.reported_correct) == (1, 0)
    assert status.reported_correct == ACTIVE["reported_correct"]
    # A withdrawn v1 case kept no hashes: it has no items.
    gone = bank.case_status(WITHDRAWN["number"], by=OPERATOR)
    assert (gone.state, gone.items) == ("withdrawn", [])
    stats = bank.stats(by=OPERATOR)
    assert stats.stored == {"pdq": 224, "phash": 2, "md5": 2, "sha256": 2}
    assert {name: n for name, n in stats.indexed.items() if n} == stats.stored
    assert stats.items == 2


def test_the_enrolled_images_still_match_after_migration(bank: Bank) -> None:
    astronaut, coffee, chelsea = bank.match(
        [
            Query(hashes_of("astronaut", "query")),
            Query(hashes_of("coffee", "plain")),
            Query(hashes_of("chelsea", "plain")),
        ]
    )
    assert len(astronaut) == 1 and len(coffee) == 1  # one result per image
    assert astronaut[0].distance == 0 and astronaut[0].hits > 1
    assert coffee[0].item_id != astronaut[0].item_id
    assert chelsea == []  # its case was withdrawn in v1
    # Feedback is per item now.
    bank.report(coffee[0].item_id, False, by=PARTNER)
    items = bank.case_status(ACTIVE["number"], by=OPERATOR).items
    assert [(i.reported_correct, i.reported_wrong) for i in items] == [(1, 0), (0, 1)]


def test_accounts_and_secrets_survive(bank: Bank) -> None:
    practitioner = bank.accounts.authenticate(MANIFEST["practitioner_key"])
    assert practitioner.role is Role.PRACTITIONER
    assert bank.accounts.authenticate(MANIFEST["partner_key"]).role is Role.PARTNER
    names = [o.name for o in bank.accounts.list_organisations(by=OPERATOR)]
    assert names == MANIFEST["organisations"]
    status = bank.case_status_with_secret(ACTIVE["number"], ACTIVE["secret"])
    assert status.item_count == 2
    assert bank.case_status(ACTIVE["number"], by=practitioner).item_count == 2


def test_re_enrolling_a_migrated_image_adds_nothing(bank: Bank) -> None:
    # The fixture's maker sent astronaut's enroll profile as one call (issue 6's, now called
    # enroll-wide): the same hashes as one item are recognised as held (the migration
    # fingerprinted each item).
    item = NewItem(hashes_of("astronaut", "enroll-wide"))
    result = bank.enroll(ACTIVE["number"], [item], by=OPERATOR)
    assert (result.added, result.existing, result.items[0].number) == (0, 1, 1)


def forms(value: bytes) -> list[bytes]:
    """A value as it could sit in a file: raw, hex (both cases), base64."""
    return [value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value)]


def test_a_migrated_folder_holds_no_value_in_clear_and_a_withdrawn_item_goes(
    data: Path, bank: Bank
) -> None:
    values = v1_values(ACTIVE["number"]) | v1_values(WITHDRAWN["number"])
    assert values and all(v in FIXTURE.joinpath(DB_FILENAME).read_bytes() for v in values)
    blob = file_bytes(data)  # v1 -> v2 -> v3: sealed, the v1 and v2 tables' pages zeroed
    assert not any(form in blob for v in values for form in forms(v))
    item = bank.withdraw_item_with_secret(ACTIVE["number"], ACTIVE["secret"], 1)
    assert item.state is ItemState.WITHDRAWN
    (coffee,) = bank.match([Query(hashes_of("coffee", "plain"))])
    assert len(coffee) == 1
    assert bank.match([Query(hashes_of("astronaut", "query"))]) == [[]]
    blob = file_bytes(data)  # the database file and its WAL, the store still open
    assert not any(form in blob for v in values for form in forms(v))


def test_a_v2_folder_is_sealed_in_place(data: Path) -> None:
    with SQLiteStore(data, _migrations=MIGRATIONS[:2]) as v2:
        assert v2.schema_version == 2
        key = v2.secret_key()
    values = v1_values(ACTIVE["number"])
    assert all(v in file_bytes(data) for v in values)  # control: v2 holds them in clear
    assert key in file_bytes(data)
    with SQLiteStore(data, _migrations=MIGRATIONS[:3]) as v3:
        assert v3.schema_version == 3
        assert v3.secret_key() == key  # match ids and fingerprints unchanged
        case = v3.get_case(ACTIVE["number"])
        assert case is not None and case.hash_count == 230
    blob = file_bytes(data)
    assert not any(form in blob for v in [*values, key] for form in forms(v))
    assert (data.parent / "data.key").stat().st_mode & 0o777 == 0o600
    with Bank.open(data) as bank:
        assert len(bank.match([Query(hashes_of("coffee", "plain"))])[0]) == 1


def test_the_audit_trail_is_kept_with_the_new_names(bank: Bank) -> None:
    actions = [e.action for e in reversed(bank.audit_log(by=OPERATOR, limit=100))]
    assert actions[:5] == ["org.create", "org.create", "key.create", "key.create", "case.create"]
    assert "match.report" in actions and "match.feedback" not in actions
    assert "organisation.create" not in actions


def test_migrating_is_done_once(data: Path) -> None:
    with SQLiteStore(data) as store:
        position = store.changes_since("").position
        key = store.secret_key()
    with SQLiteStore(data) as store:
        assert store.schema_version == 6
        assert store.changes_since("").position == position == "0"  # the log starts empty
        assert store.secret_key() == key
        assert len(store.list_items(store.get_case(ACTIVE["number"]).id)) == 2  # type: ignore[union-attr]


def test_a_v1_call_of_more_than_65536_hashes_is_split_into_items(tmp_path: Path) -> None:
    """A v1 folder written by hand: one call of 70,000 hashes, one of 3 into the same case."""
    data = tmp_path / "data"
    with SQLiteStore(data, _migrations=MIGRATIONS[:1]) as v1:
        assert v1.schema_version == 1
    conn = sqlite3.connect(data / DB_FILENAME)
    conn.execute("INSERT INTO organisations VALUES (1, 'Old', 0)")
    conn.execute(
        "INSERT INTO cases(id, number, org_id, state, secret_hash, hash_count, created_at) "
        "VALUES (1, 'AAAA-BBBB-CCCC', 1, 'active', 'scrypt$x', 70003, 0)"
    )
    rng = np.random.default_rng(7)
    big = [rng.bytes(32) for _ in range(70_000)]
    rows = [(1, "pdq", v, 90, 1000) for v in big]
    rows += [(1, "pdq", rng.bytes(32), 90, 2000) for _ in range(3)]
    conn.executemany(
        "INSERT INTO hashes(case_id, signal, value, quality, created_at) VALUES (?,?,?,?,?)", rows
    )
    conn.execute("INSERT INTO signal_counts VALUES ('pdq', 70003)")
    conn.commit()
    conn.close()
    with Bank.open(data) as bank:
        items = bank.case_status("AAAA-BBBB-CCCC", by=OPERATOR).items
        assert [(i.number, i.hash_count) for i in items] == [(1, 65_536), (2, 4_464), (3, 3)]
        first, second = bank.match([Query([Hash(PDQ, big[0])]), Query([Hash(PDQ, big[-1])])])
        assert len(first) == len(second) == 1 and first[0].item_id != second[0].item_id
        assert len(bank.follower.index) == 70_003
