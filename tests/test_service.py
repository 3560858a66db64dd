"""The gRPC service, through real sockets: every RPC, every role, every bad input."""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from PIL import Image, ImageOps

from matcher.client import AsyncClient, Client, Query
from matcher.errors import (
    Conflict,
    InvalidInput,
    LowQuality,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from matcher.principal import Principal
from matcher.records import CaseState, ItemState, MatchBand, NewItem
from matcher.service import ServerConfig, ServiceLimits
from matcher.signals import PDQ, Hash
from matcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cases_pb2,
    cases_pb2_grpc,
    hashes_pb2,
    match_pb2,
    match_pb2_grpc,
)
from tests.service_fixtures import (
    Running,
    flip_bits,
    random_pdq,
    random_phash,
    start_server,
    stop_server,
)


def _raw(service: Running, stub_class, method: str, request, role: str = "partner", **kwargs):
    """Call an RPC with the raw stub, to send what the SDK would never send."""
    with grpc.insecure_channel(service.target) as channel:
        stub = stub_class(channel)
        metadata = (("authorization", f"Bearer {service.keys[role]}"),)
        return getattr(stub, method)(request, metadata=metadata, **kwargs)


def _raw_match(service: Running, request: match_pb2.MatchRequest, **kwargs):
    return _raw(service, match_pb2_grpc.MatchServiceStub, "Match", request, **kwargs)


def _violation(exc: grpc.RpcError) -> error_details_pb2.BadRequest.FieldViolation:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
            return bad.field_violations[0]
    raise AssertionError("no BadRequest detail")


# -- happy paths


def test_enroll_match_report_status_withdraw(service: Running, rng: np.random.Generator) -> None:
    photo = random_pdq(rng)
    other = random_phash(rng)
    case, enrolled = service.enroll([NewItem([photo], label="photo 1"), [other]])
    assert (enrolled.added, enrolled.existing, enrolled.item_count) == (2, 0, 2)
    assert [i.number for i in enrolled.items] == [1, 2]
    with service.client("partner") as partner:
        near = flip_bits(photo, 30, rng)
        far = flip_bits(photo, 32, rng)
        results = partner.match([Query([near], query_id="upload-1"), Query([far]), [other]])
        assert results[0].query_id == "upload-1"
        # No exact distance by default: a band (30 bits is near the threshold: weak).
        assert [(m.signal, m.distance, m.band, m.hits) for m in results[0].matches] == [
            (PDQ, None, MatchBand.WEAK, 1)
        ]
        assert results[1].matches == []
        assert results[2].matches[0].band is MatchBand.STRONG
        assert results[0].matches[0].item_id != results[2].matches[0].item_id
        partner.report(results[0].matches[0].item_id, correct=True)
        partner.report(results[2].matches[0].item_id, correct=False)
    with service.client("practitioner") as practitioner:
        status = practitioner.get_case(case.number)
        assert (status.state, status.item_count, status.hash_count) == (CaseState.ACTIVE, 2, 2)
        assert status.hashes_by_signal == {"pdq": 1, "phash": 1}
        assert (status.reported_correct, status.reported_wrong, status.match_count) == (1, 1, 2)
        first, second = status.items
        assert (first.name, first.label, first.reported_correct) == (
            f"cases/{case.number}/items/1",
            "photo 1",
            1,
        )
        assert (second.label, second.reported_wrong, second.hashes_by_signal) == (
            None,
            1,
            {"phash": 1},
        )
        withdrawn = practitioner.withdraw(case.number)
        assert withdrawn.state is CaseState.WITHDRAWN and withdrawn.hash_count == 0
        assert practitioner.withdraw(case.number).state is CaseState.WITHDRAWN  # retry-safe
        with pytest.raises(Conflict):  # a withdrawn case takes no new items
            practitioner.add_items(case.number, [[other]])
    with service.client("partner") as partner:
        # Effective on the very next call.
        assert [r.matches for r in partner.match([[photo], [other]])] == [[], []]


def test_one_result_per_item_however_many_hashes_hit(
    service: Running, rng: np.random.Generator
) -> None:
    views = [random_pdq(rng) for _ in range(5)]
    service.enroll([views, [random_pdq(rng)]])
    query = [flip_bits(views[0], 20, rng), flip_bits(views[1], 5, rng), flip_bits(views[2], 9, rng)]
    noise = [random_pdq(rng) for _ in range(5)]
    with service.client("exact") as partner:  # granted exact distances and max_distance
        [result] = partner.match([Query(noise + query)])
        assert [(m.distance, m.hits) for m in result.matches] == [(5, 3)]
        [strict] = partner.match([Query(noise + query, max_distance=8)])
        assert [(m.distance, m.hits) for m in strict.matches] == [(5, 1)]
        [none] = partner.match([Query(noise + query, max_distance=4)])
        assert none.matches == []


def test_an_edited_upload_of_an_enrolled_photo_gives_exactly_one_result(
    service: Running, astronaut: Image.Image, coffee: Image.Image
) -> None:
    """The shipped profiles end to end: an image enrolled with the ``enroll`` profile (about
    99 views) and an edited re-upload hashed with the ``query`` profile answer ONE item."""
    from matcher.hashing import enroll_views, phash, query_views

    def item(image: Image.Image, label: str) -> NewItem:
        views = [h for _, h in enroll_views(image) if h.signal.meets_floor(h.quality)]
        return NewItem([*views, phash(image)], label=label)

    photo, other = item(astronaut, "astronaut"), item(coffee, "coffee")
    assert len(photo.hashes) > 90
    case, enrolled = service.enroll([photo, other])
    # The upload: mirrored, cropped by 8%, shrunk and re-encoded as a JPEG.
    w, h = astronaut.size
    edited = ImageOps.mirror(astronaut).crop((int(w * 0.08), 0, w, int(h * 0.92)))
    edited = edited.resize((edited.width * 3 // 4, edited.height * 3 // 4))
    buffer = io.BytesIO()
    edited.save(buffer, "JPEG", quality=70)
    upload = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    hashes = [h for _, h in query_views(upload)] + [phash(upload)]
    assert len(hashes) > 10
    with service.client("partner") as partner:
        [result] = partner.match([Query(hashes, query_id="upload")])
        [only] = result.matches
        assert only.hits >= 1 and only.band in (MatchBand.STRONG, MatchBand.WEAK)
        partner.report(only.item_id, correct=True)
    with service.client("practitioner") as practitioner:
        status = practitioner.get_case(case.number)
    assert [(i.label, i.reported_correct) for i in status.items] == [
        ("astronaut", 1),
        ("coffee", 0),
    ]
    assert enrolled.items[0].hash_count == len(set(photo.hashes))


def test_enrollment_is_idempotent_per_item(service: Running, rng: np.random.Generator) -> None:
    a, b = [random_pdq(rng), random_phash(rng)], [random_pdq(rng)]
    case, _ = service.enroll([a, b])
    with service.client("practitioner") as practitioner:
        again = practitioner.add_items(case.number, [b, list(reversed(a)), [random_phash(rng)]])
        assert (again.added, again.existing, again.item_count) == (1, 2, 3)
        assert [i.number for i in again.items] == [2, 1, 3]
        assert practitioner.get_case(case.number).hash_count == 4


def test_stream_match_answers_each_batch_in_order(
    service: Running, rng: np.random.Generator
) -> None:
    enrolled = [random_pdq(rng) for _ in range(5)]
    service.enroll([[h] for h in enrolled])
    batches = [
        [Query([flip_bits(h, 3, rng)], query_id=f"{b}-{i}") for i, h in enumerate(enrolled)]
        + [Query([random_pdq(rng)], query_id=f"{b}-miss")]
        for b in range(20)
    ]
    with service.client("partner") as partner:
        answers = list(partner.stream_match(batches))
        # A bad message ends the stream with its location; the answers before it arrived.
        got = []
        with pytest.raises(InvalidInput) as err:
            for answer in partner.stream_match([batches[0], batches[1], []]):
                got.append(answer)
        assert err.value.field == "requests[2].queries" and len(got) == 2
    assert len(answers) == 20
    for b, answer in enumerate(answers):
        assert [r.query_id for r in answer] == [q.query_id for q in batches[b]]
        assert [len(r.matches) for r in answer] == [1, 1, 1, 1, 1, 0]


def test_victim_sees_and_withdraws_the_case_with_number_and_secret(
    service: Running, rng: np.random.Generator
) -> None:
    h = random_pdq(rng)
    case, _ = service.enroll([[h]])
    typed = case.number.replace("-", "").lower()  # as a person might type it
    with service.client() as anonymous:  # no API key at all
        with pytest.raises(NotFound):
            anonymous.withdraw_with_secret(case.number, "WRONG-SECRET")
        with pytest.raises(NotFound):
            anonymous.get_case_with_secret(case.number, "WRONG-SECRET")
        status = anonymous.get_case_with_secret(typed, case.secret)
        assert (status.number, status.item_count, len(status.items)) == (case.number, 1, 1)
        withdrawn = anonymous.withdraw_with_secret(case.number, case.secret)
        assert withdrawn.state is CaseState.WITHDRAWN and withdrawn.withdrawn_at is not None
    with service.client("partner") as partner:
        assert partner.match([[h]])[0].matches == []


def _held_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file())


def _sealed_blob(data: Path, item_number: int) -> bytes:
    """The sealed codes of item ``item_number`` of the (only) case, as stored."""
    import sqlite3

    conn = sqlite3.connect(data / "matcher.db")
    try:
        row = conn.execute(
            "SELECT sealed FROM item_codes JOIN items ON items.id = item_codes.item_id "
            "WHERE items.number = ?",
            (item_number,),
        ).fetchone()
        return bytes(row[0])
    finally:
        conn.close()


@pytest.mark.parametrize("by", ["practitioner", "victim"])
def test_withdrawing_one_item(service: Running, rng: np.random.Generator, by: str) -> None:
    """The withdrawn item never matches again and its values leave the database files; the
    case's other items still match."""
    photos = [[random_pdq(rng), random_phash(rng)] for _ in range(3)]
    case, _ = service.enroll(photos)
    gone = photos[1]
    # Values are sealed at rest (tests/test_at_rest.py): the files hold them never in clear,
    # and the withdrawn item's sealed blob must go.
    blob = _sealed_blob(service.data, 2)
    assert blob in _held_bytes(service.data)
    assert not any(h.value in _held_bytes(service.data) for p in photos for h in p)
    with service.client("partner") as partner:
        [before] = partner.match([gone[:1]])
        gone_id = before.matches[0].item_id
    with service.client(by if by == "practitioner" else None) as c:
        if by == "practitioner":
            item = c.withdraw_item(case.number, 2)
        else:
            with pytest.raises(NotFound):  # a wrong secret, or an item that is not there
                c.withdraw_item_with_secret(case.number, "WRONG-SECRET", 2)
            with pytest.raises(NotFound):
                c.withdraw_item_with_secret(case.number, case.secret, 9)
            item = c.withdraw_item_with_secret(case.number, case.secret, 2)
    assert (item.number, item.state, item.hash_count) == (2, ItemState.WITHDRAWN, 0)
    assert item.withdrawn_at is not None
    with service.client("partner") as partner:
        results = partner.match([photos[0][:1], gone[:1], gone[1:], photos[2][1:]])
        assert [len(r.matches) for r in results] == [1, 0, 0, 1]
        with pytest.raises(NotFound):  # feedback on a withdrawn item
            partner.report(gone_id, correct=True)
    with service.client("practitioner") as practitioner:
        status = practitioner.get_case(case.number)
    assert (status.state, status.item_count, status.hash_count) == (CaseState.ACTIVE, 2, 4)
    assert [i.state for i in status.items] == [
        ItemState.ACTIVE,
        ItemState.WITHDRAWN,
        ItemState.ACTIVE,
    ]
    assert status.items[1].hashes_by_signal == {}
    held = _held_bytes(service.data)
    assert blob not in held
    assert all(_sealed_blob(service.data, n) in held for n in (1, 3))


def test_feedback_on_ids_that_name_no_item(service: Running) -> None:
    with service.client("partner") as partner:
        with pytest.raises(InvalidInput) as err:
            partner.report("", correct=False)
        assert err.value.field == "item_id"
        for bad in ("m_zz", "m_" + "f" * 16, "not an id", "m_" + "0" * 16):
            with pytest.raises(NotFound):
                partner.report(bad, correct=False)


def test_admin_keys_organisations_and_stats(service: Running, rng: np.random.Generator) -> None:
    service.enroll([[random_pdq(rng)], [random_pdq(rng)]])
    with service.client("admin") as admin:
        org = admin.create_organization("Platform C")
        new = admin.create_api_key("c-moderation", "partner", organization=org.id)
        assert new.key and new.record.role == "partner" and new.record.org_id == org.id
        keys = admin.list_api_keys()
        assert new.record.id in [k.id for k in keys]
        assert all(not hasattr(k, "key") for k in keys)
        with Client(service.target, new.key) as fresh:
            assert fresh.match([[random_pdq(rng)]])[0].matches == []
        revoked = admin.revoke_api_key(new.record.id)
        assert revoked.revoked_at is not None and not revoked.active
        stats = admin.stats()
        assert stats.ready and stats.indexed["pdq"] == 2 and stats.cases["active"] == 1
        assert stats.items == 2
        # Admins open cases for a named organisation; practitioner keys need one.
        assert admin.create_case(organization=org.id).number
        with pytest.raises(InvalidInput):
            admin.create_api_key("x", "practitioner")
        with pytest.raises(NotFound):
            admin.create_api_key("x", "partner", organization=10**6)
    time.sleep(2.1)  # the server caches keys for 2 s
    with Client(service.target, new.key) as fresh, pytest.raises(Unauthenticated):
        fresh.match([[random_pdq(rng)]])


def test_listings_page_with_tokens(service: Running) -> None:
    with service.client("admin") as admin:
        for name in ("C", "D", "E"):
            admin.create_organization(f"Platform {name}")
    stub = admin_pb2_grpc.AdminServiceStub
    names, token = [], ""
    while True:
        request = admin_pb2.ListOrganizationsRequest(page_size=2, page_token=token)
        reply = _raw(service, stub, "ListOrganizations", request, "admin", timeout=5)
        names += [o.display_name for o in reply.organizations]
        token = reply.next_page_token
        if not token:
            break
    assert names == ["Helpline A", "Helpline B", "Platform C", "Platform D", "Platform E"]
    for bad, field in (({"page_token": "x"}, "page_token"), ({"page_size": -1}, "page_size")):
        with pytest.raises(grpc.RpcError) as err:
            _raw(service, stub, "ListApiKeys", admin_pb2.ListApiKeysRequest(**bad), "admin")
        assert _violation(err.value).field == field


def test_async_client(service: Running, rng: np.random.Generator) -> None:
    h = random_pdq(rng)
    service.enroll([[h]])

    async def main() -> tuple[int, int]:
        async with AsyncClient(service.target, service.keys["partner"]) as client:
            assert await client.healthy()
            results = await asyncio.gather(*(client.match([[h]]) for _ in range(20)))

            async def batches():
                for _ in range(3):
                    yield [[h], [random_pdq(rng)]]

            streamed = [r async for r in client.stream_match(batches())]
            return sum(len(r[0].matches) for r in results), len(streamed)

    assert asyncio.run(main()) == (20, 3)


# -- roles


def test_each_role_is_refused_where_it_must_be(service: Running, rng: np.random.Generator) -> None:
    case, _ = service.enroll([[random_pdq(rng)]])
    with service.client("partner") as partner:
        with pytest.raises(PermissionDenied):
            partner.create_case()
        with pytest.raises(PermissionDenied):
            partner.get_case(case.number)
        with pytest.raises(PermissionDenied):
            partner.withdraw_item(case.number, 1)
        with pytest.raises(PermissionDenied):
            partner.create_api_key("x", "admin")
    with service.client("practitioner") as practitioner:
        with pytest.raises(PermissionDenied):
            practitioner.match([[random_pdq(rng)]])
        with pytest.raises(PermissionDenied):
            practitioner.stats()
        with pytest.raises(PermissionDenied):
            list(practitioner.stream_match([[[random_pdq(rng)]]]))
    with service.client("practitioner_b") as other_org:
        # Another organisation's case looks exactly like a missing one.
        for call in (
            lambda: other_org.get_case(case.number),
            lambda: other_org.withdraw(case.number),
            lambda: other_org.withdraw_item(case.number, 1),
            lambda: other_org.add_items(case.number, [[random_pdq(rng)]]),
        ):
            with pytest.raises(NotFound):
                call()
    with service.client() as nobody, pytest.raises(Unauthenticated):
        nobody.match([[random_pdq(rng)]])
    with Client(service.target, "mk_not-a-real-key") as wrong, pytest.raises(Unauthenticated):
        wrong.match([[random_pdq(rng)]])


# -- bad input


def test_bad_hashes_get_invalid_argument_with_field_violations(service: Running) -> None:
    good = hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=bytes(32))
    cases = {
        "wrong length": (
            hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=bytes(31)),
            "queries[1].hashes[0].value",
        ),
        "unknown signal": (
            hashes_pb2.Hash(signal_type=99, value=bytes(32)),
            "queries[1].hashes[0].signal_type",
        ),
        "unspecified signal": (
            hashes_pb2.Hash(value=bytes(32)),
            "queries[1].hashes[0].signal_type",
        ),
    }
    for name, (bad, field) in cases.items():
        request = match_pb2.MatchRequest(
            queries=[match_pb2.Query(hashes=[good]), match_pb2.Query(hashes=[bad])]
        )
        with pytest.raises(grpc.RpcError) as err:
            _raw_match(service, request, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert _violation(err.value).field == field, name


def test_batch_limits_distance_and_deadline(service: Running) -> None:
    one = match_pb2.Query(hashes=[hashes_pb2.Hash(signal_type=1, value=bytes(32))])
    problems = {
        "empty batch": (match_pb2.MatchRequest(), "queries"),
        "batch too big": (match_pb2.MatchRequest(queries=[one] * 1001), "queries"),
        "empty query": (match_pb2.MatchRequest(queries=[match_pb2.Query()]), "queries[0].hashes"),
        "distance too big": (
            match_pb2.MatchRequest(queries=[match_pb2.Query(hashes=one.hashes, max_distance=32)]),
            "queries[0].max_distance",
        ),
    }
    for name, (request, field) in problems.items():
        with pytest.raises(grpc.RpcError) as err:
            _raw_match(service, request, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert _violation(err.value).field == field, name
    with pytest.raises(grpc.RpcError) as err:
        _raw_match(service, match_pb2.MatchRequest(queries=[one]))  # no deadline
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(err.value).field == "grpc-timeout"


def _pdq_pb(value: bytes = bytes(32), quality: int | None = 90) -> hashes_pb2.Hash:
    message = hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=value)
    if quality is not None:
        message.quality = quality
    return message


def test_bad_items_get_field_violations_and_nothing_is_stored(
    service: Running, rng: np.random.Generator
) -> None:
    case, _ = service.enroll([[random_pdq(rng)]])
    good = cases_pb2.NewItem(kind=hashes_pb2.ITEM_KIND_IMAGE, hashes=[_pdq_pb(bytes(range(32)))])
    many = [_pdq_pb(rng.integers(0, 256, 32, dtype=np.uint8).tobytes()) for _ in range(200)]
    problems = {
        "no items": ([], "items"),
        "too many items": ([good] * 1001, "items"),
        "too many hashes": (
            [cases_pb2.NewItem(kind=1, hashes=many)] * 501,
            "items",
        ),
        "item without hashes": ([good, cases_pb2.NewItem(kind=1)], "items[1].hashes"),
        "item without kind": ([good, cases_pb2.NewItem(hashes=[_pdq_pb()])], "items[1].kind"),
        "flat PDQ": (
            [good, good, cases_pb2.NewItem(kind=1, hashes=[_pdq_pb(), _pdq_pb(quality=49)])],
            "items[2].hashes[1].quality",
        ),
        "PDQ without quality": (
            [cases_pb2.NewItem(kind=1, hashes=[_pdq_pb(quality=None)])],
            "items[0].hashes[0].quality",
        ),
        "short value": (
            [cases_pb2.NewItem(kind=1, hashes=[_pdq_pb(bytes(30))])],
            "items[0].hashes[0].value",
        ),
        "long label": (
            [cases_pb2.NewItem(kind=1, hashes=[_pdq_pb()], label="x" * 201)],
            "items[0].label",
        ),
    }
    for name, (items, field) in problems.items():
        request = cases_pb2.AddItemsRequest(name=f"cases/{case.number}", items=items)
        with pytest.raises(grpc.RpcError) as err:
            _raw(
                service, cases_pb2_grpc.CaseServiceStub, "AddItems", request, "practitioner",
                timeout=10,
            )  # fmt: skip
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert _violation(err.value).field == field, name
    with service.client("practitioner") as practitioner:
        assert practitioner.get_case(case.number).item_count == 1  # all or none
    for bad_name in ("cases/", f"cases/{case.number}/items/0", f"cases/{case.number}/items/y"):
        request = cases_pb2.WithdrawItemRequest(name=bad_name)
        with pytest.raises(grpc.RpcError) as err:
            _raw(
                service, cases_pb2_grpc.CaseServiceStub, "WithdrawItem", request, "practitioner",
                timeout=10,
            )  # fmt: skip
        assert _violation(err.value).field == "name", bad_name


def test_low_quality_enrollment_is_refused_whole(
    service: Running, rng: np.random.Generator
) -> None:
    with service.client("practitioner") as practitioner:
        number = practitioner.create_case().number
        good = random_pdq(rng, quality=90)
        with pytest.raises(LowQuality) as err:
            # Items are checked where they are built: the SDK refuses before sending.
            practitioner.add_items(number, [[good], [good, random_pdq(rng, quality=30)]])
        assert err.value.field == "items[1].hashes[1].quality"
        assert "below the floor" in str(err.value)
        assert practitioner.get_case(number).hash_count == 0
    with service.client("partner") as partner:
        assert partner.match([[good]])[0].matches == []


def test_error_messages_never_carry_hash_values(service: Running, rng: np.random.Generator) -> None:
    value = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    case, _ = service.enroll([[random_pdq(rng)]])
    for bad in (_pdq_pb(value, quality=10), _pdq_pb(value[:31])):
        request = cases_pb2.AddItemsRequest(
            name=case.number, items=[cases_pb2.NewItem(kind=1, hashes=[bad])]
        )
        with pytest.raises(grpc.RpcError) as err:
            _raw(
                service, cases_pb2_grpc.CaseServiceStub, "AddItems", request, "practitioner",
                timeout=10,
            )  # fmt: skip
        assert value.hex()[:16] not in str(err.value.details())
        assert value[:31].hex()[:16] not in str(err.value.details())


# -- limits


def test_rate_limit_gives_resource_exhausted_with_retry_info(tmp_path: Path) -> None:
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, rate=5, burst=5)
    running, thread = start_server(tmp_path / "data", config)
    try:
        assert running.bank.wait_ready(120)
        with running.client("partner") as partner:
            for _ in range(5):
                partner.match([[Hash(PDQ, bytes(32))]])
            with pytest.raises(RateLimited) as err:
                partner.match([[Hash(PDQ, bytes(32))]])
            assert 0 < err.value.retry_after <= 1.0
            with pytest.raises(RateLimited):  # 100 queries cost 100 tokens
                partner.match([[Hash(PDQ, bytes(32))]] * 100)
    finally:
        stop_server(running, thread)


def test_failed_victim_guesses_are_limited_but_never_lock_the_victim_out(tmp_path: Path) -> None:
    """Strangers who know a case number guess from one address: that address is refused with
    a time to retry (status and withdrawal share its bucket, every typed form of the number
    too), while the victim, from another address, withdraws with the right secret at once,
    however many wrong guesses came before. Refused attempts are audited without the secret,
    and the store never holds the address (only a keyed hash of it, in its failure counts)."""
    limits = ServiceLimits(
        secret_failures=3, secret_window_seconds=3600, secret_backoff_seconds=0.2
    )
    config = ServerConfig(address="[::]:0", metrics_address=None, limits=limits)
    running, thread = start_server(tmp_path / "data", config)
    try:
        assert running.bank.wait_ready(120)
        with running.client("practitioner") as practitioner:
            case = practitioner.create_case()
        bare = case.number.replace("-", "")
        with running.client() as stranger:
            with pytest.raises(NotFound):
                stranger.withdraw_with_secret(case.number, "guess")
            with pytest.raises(NotFound):
                stranger.get_case_with_secret(bare.lower(), "guess")
            with pytest.raises(NotFound):
                stranger.withdraw_item_with_secret(f" {bare} ", "guess", 1)
            # This address is paused now, on every case, and is told for how long.
            with pytest.raises(RateLimited) as err:
                stranger.withdraw_with_secret("AAAA-BBBB-CCCC", "guess")
            # Until the failures leave the window (3,600 s, sliding by 240 s).
            assert 3600 - 240 < err.value.retry_after <= 3600
            assert "try again in" in str(err.value)
        # The case's own budget is spent too, yet the victim, from an address of their own
        # (IPv6 loopback here), still withdraws with the right secret, at once.
        started = time.monotonic()
        with Client(f"[::1]:{running.server.port}") as victim:
            assert victim.get_case_with_secret(bare, case.secret).state is CaseState.ACTIVE
            done = victim.withdraw_with_secret(case.number, case.secret)
        assert done.state is CaseState.WITHDRAWN
        assert time.monotonic() - started < 5  # backed off by at most 0.2 s per call
        refused = [
            r
            for r in running.bank.audit_log(by=Principal.operator(), limit=100)
            if r.action == "victim.refused"
        ]
        assert len(refused) == 3
        assert all(r.case_id is not None and "peer" not in r.detail for r in refused)
        assert all("guess" not in str(r.detail) for r in refused)
        files = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
        assert b"127.0.0.1" not in files and b"ipv4:" not in files
    finally:
        stop_server(running, thread)


def test_victim_strings_are_bounded_before_anything_is_kept(service: Running) -> None:
    with service.client() as anonymous:
        for number, secret, field in (
            ("A" * 65, "x", "case_number"),
            ("AAAA-BBBB-CCCC", "x" * 201, "secret"),
        ):
            with pytest.raises(InvalidInput) as err:
                anonymous.withdraw_with_secret(number, secret)
            assert err.value.field == field


# -- health, reflection, metrics, shutdown


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return reply.status


def test_health_flips_at_start_up_and_shutdown(tmp_path: Path, rng: np.random.Generator) -> None:
    config = ServerConfig(
        address="127.0.0.1:0", metrics_address=None, drain_seconds=1.5, grace_seconds=5
    )
    running, thread = start_server(tmp_path / "data", config, load=False)
    try:
        assert _health(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with running.client("partner") as partner, pytest.raises(Unavailable) as err:
            partner.match([[random_pdq(rng)]])
        assert "loading" in str(err.value)
        # Enrollment works before the index is ready; the load picks it up.
        photo = random_pdq(rng)
        running.enroll([[photo]])
        running.bank.load()
        deadline = time.monotonic() + 10
        while _health(running.target) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with running.client("partner") as partner:
            assert len(partner.match([[photo]])[0].matches) == 1

        # Shutdown: an open stream keeps working through the drain; health says NOT_SERVING.
        with running.client("partner") as partner:
            sent = threading.Event()
            go_on = threading.Event()

            def batches():
                yield [[random_pdq(rng)]]
                sent.set()
                go_on.wait(10)
                yield [[random_pdq(rng)]]

            answers: list = []
            reader = threading.Thread(
                target=lambda: answers.extend(partner.stream_match(batches()))
            )
            reader.start()
            assert sent.wait(10)
            stopping = asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop)
            time.sleep(0.3)
            assert _health(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING
            go_on.set()
            reader.join(10)
            assert len(answers) == 2  # the in-flight stream finished
            stopping.result(20)
    finally:
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(10)
        running.bank.close()


def test_reflection_lists_the_services(service: Running) -> None:
    with grpc.insecure_channel(service.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "matcher.v1.MatchService",
        "matcher.v1.CaseService",
        "matcher.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names


def test_metrics_and_logs_carry_no_hash_values(
    service: Running, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="matcher")
    h = random_pdq(rng)
    case, _ = service.enroll([[h], [random_phash(rng)]])
    with service.client("partner") as partner:
        partner.match([[h]])
        with pytest.raises(InvalidInput):
            partner.match([])
    with service.client("practitioner") as practitioner:
        practitioner.withdraw_item(case.number, 2)
        practitioner.withdraw(case.number)
    url = f"http://127.0.0.1:{service.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'matcher_requests_total{code="OK",method="Match"} 1.0' in text
    assert 'matcher_requests_total{code="INVALID_ARGUMENT",method="Match"} 1.0' in text
    assert 'matcher_requests_total{code="OK",method="WithdrawItem"} 1.0' in text
    assert 'matcher_hashes_total{op="match",signal="pdq"} 1.0' in text
    assert 'matcher_hashes_total{op="enroll",signal="phash"} 1.0' in text
    assert "matcher_request_seconds_bucket" in text and "matcher_index_hashes" in text
    assert "matcher_items 0.0" in text
    # Per partner, by key id: the one Match sent one hash and got one match back.
    assert re.search(r'matcher_partner_hashes_total\{key="\d+"\} 1\.0', text)
    assert re.search(r'matcher_partner_matches_total\{key="\d+"\} 1\.0', text)
    assert h.hex not in text and h.hex not in caplog.text
    assert h.hex[:16] not in text and h.hex[:16] not in caplog.text


def test_server_modules_never_import_hashing() -> None:
    code = (
        "import sys, matcher.service, matcher.bank, matcher.store, matcher.client;"
        "bad = [m for m in sys.modules if m.startswith('matcher.hashing') or m == 'PIL'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_sdk_imports_neither_the_bank_nor_the_service() -> None:
    """The SDK stays light for pipelines that only query: no index (numba), no store, and no
    credentials (an scrypt hash runs when that module loads)."""
    code = (
        "import sys, matcher.client;"
        "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['matcher', 'bank'], ['matcher', 'service'], ['matcher', 'store'], ['matcher', 'index'],"
        " ['matcher', 'credentials']) or m == 'numba'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_matcher_serve_opens_its_port_before_compiling_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    """With numba's cache empty the kernels take seconds to compile: the port is open and
    health says NOT_SERVING all that time, then SERVING."""
    import os
    import re
    import signal

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "matcher.cli", "serve", "--data", str(tmp_path / "d"),
            "--address", "127.0.0.1:0", "--metrics-address", "off", "--grace", "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "listening on" in line:
                break
        found = re.search(r"\(port (\d+)\)", lines[-1])
        assert found, lines
        target = f"127.0.0.1:{found.group(1)}"
        assert _health(target) == health_pb2.HealthCheckResponse.NOT_SERVING
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "serving:" in line:
                break
        assert _health(target) == health_pb2.HealthCheckResponse.SERVING
        assert any("matcher keys create --role admin" in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()


def _stream_server(tmp_path: Path, **limits: Any) -> tuple[Running, threading.Thread]:
    config = ServerConfig(
        address="127.0.0.1:0",
        metrics_address=None,
        key_cache_seconds=0.5,
        limits=ServiceLimits(**limits),
    )
    running, thread = start_server(tmp_path / "data", config)
    assert running.bank.wait_ready(120)
    return running, thread


def _held_batches(q: queue.Queue[Any]) -> Iterator[Any]:
    while (batch := q.get()) is not None:
        yield batch


def test_revoking_a_key_ends_its_open_streams_within_the_key_cache_period(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    running, thread = _stream_server(tmp_path)
    held: queue.Queue[Any] = queue.Queue()
    try:
        photo = random_pdq(rng)
        running.enroll([[photo]])
        with running.client("partner") as partner:
            answers = partner.stream_match(_held_batches(held))
            held.put([[photo]])
            assert len(next(answers)[0].matches) == 1
            # Revoked elsewhere (the CLI, another replica): this server learns it only when
            # its cached lookup of the key expires; the idle stream ends then.
            me = Principal.operator("tests")
            key_id = next(
                k.id for k in running.bank.accounts.list_api_keys(by=me) if k.name == "acme"
            )
            running.bank.accounts.revoke_api_key(key_id, by=me)
            started = time.monotonic()
            with pytest.raises(Unauthenticated):
                next(answers)
            assert time.monotonic() - started < 0.5 + 1.5
    finally:
        held.put(None)
        stop_server(running, thread)


def test_idle_streams_are_closed(tmp_path: Path, rng: np.random.Generator) -> None:
    running, thread = _stream_server(tmp_path, stream_idle_seconds=1.0)
    held: queue.Queue[Any] = queue.Queue()
    try:
        with running.client("partner") as partner:
            answers = partner.stream_match(_held_batches(held))
            held.put([[random_pdq(rng)]])
            assert next(answers)[0].matches == []
            started = time.monotonic()
            with pytest.raises(Unavailable) as err:
                next(answers)
            assert 0.9 < time.monotonic() - started < 3.0
            assert "without a message" in str(err.value)
    finally:
        held.put(None)
        stop_server(running, thread)
