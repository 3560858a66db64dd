"""The contract: generated code is fresh, no message can carry image bytes, and
``matcher.contract`` converts every value both ways and locates every bad one on its wire field."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import code_pb2, error_details_pb2

from matcher import contract
from matcher.errors import (
    Conflict,
    InvalidDistance,
    InvalidHash,
    InvalidInput,
    LowQuality,
    MatcherError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from matcher.principal import Role
from matcher.records import (
    ApiKeyRecord,
    BankStats,
    CaseState,
    CaseStatus,
    EnrollResult,
    ItemKind,
    ItemMatch,
    ItemState,
    ItemStatus,
    NewItem,
    Organisation,
    Query,
    QueryResult,
)
from matcher.signals import MD5, PDQ, PHASH, SHA256, SIGNALS, Hash
from matcher.v1 import admin_pb2, cases_pb2, hashes_pb2, match_pb2

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)


def test_generated_code_is_fresh() -> None:
    pytest.importorskip("grpc_tools")
    from matcher._codegen import stale

    assert stale() == [], "run `make proto`"


def test_the_only_bytes_field_is_a_hash_value() -> None:
    """Rule 1 of DESIGN.md: no field anywhere carries image bytes."""
    bytes_fields = []
    for module in (admin_pb2, cases_pb2, hashes_pb2, match_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                if field.type == FieldDescriptor.TYPE_BYTES:
                    bytes_fields.append(f"{message.full_name}.{field.name}")
    assert bytes_fields == ["matcher.v1.Hash.value"]


def test_signal_enum_covers_the_registry() -> None:
    names = {v.name for v in hashes_pb2.SignalType.DESCRIPTOR.values}
    for name in SIGNALS:
        assert f"SIGNAL_TYPE_{name.upper()}" in names


def test_no_response_carries_a_hash() -> None:
    """Rule 2: partners never read stored hashes back; only requests hold ``Hash`` messages."""
    for module in (admin_pb2, cases_pb2, match_pb2):
        for name, message in module.DESCRIPTOR.message_types_by_name.items():
            if name.endswith("Response"):
                seen = set()
                todo = [message]
                while todo:
                    m = todo.pop()
                    assert m.full_name != "matcher.v1.Hash", name
                    for f in m.fields:
                        if f.message_type is not None and f.message_type.full_name not in seen:
                            seen.add(f.message_type.full_name)
                            todo.append(f.message_type)


# -- values, both ways


def _hashes() -> list[Hash]:
    return [
        Hash(PDQ, bytes(range(32)), 87),
        Hash(PHASH, bytes(8)),
        Hash(MD5, bytes(16)),
        Hash(SHA256, b"\xff" * 32),
    ]


def test_hashes_round_trip_with_their_quality() -> None:
    for h in _hashes():
        back = contract.hash_from_pb(contract.hash_to_pb(h))
        assert back == h and back.quality == h.quality
    assert not contract.hash_to_pb(Hash(PHASH, bytes(8))).HasField("quality")


def test_queries_round_trip() -> None:
    queries = [
        Query(_hashes()[:2], None, "upload-1"),
        Query([Hash(PDQ, bytes(32))], 12, ""),
        Query([Hash(PDQ, bytes(32)), Hash(PDQ, b"\x01" * 32)], {"pdq": 20}, "q"),
    ]
    back = contract.queries_from_pb(contract.queries_to_pb(queries), max_batch=10)
    assert [(q.hashes, q.query_id) for q in back] == [(q.hashes, q.query_id) for q in queries]
    assert [q.max_distance for q in back] == [None, 12, 20]
    # Plain lists of hashes are queries with defaults.
    [plain] = contract.queries_to_pb([[Hash(PDQ, bytes(32))]])
    assert not plain.HasField("max_distance") and plain.query_id == ""


def test_a_per_signal_distance_the_wire_cannot_carry_is_refused() -> None:
    mixed = Query([Hash(PDQ, bytes(32)), Hash(PHASH, bytes(8))], {"pdq": 20})
    with pytest.raises(InvalidDistance) as err:
        contract.query_to_pb(mixed)
    assert err.value.field == "max_distance"


def test_results_round_trip() -> None:
    queries = [Query([Hash(PDQ, bytes(32))], None, "a"), Query([Hash(PHASH, bytes(8))])]
    results = [
        [ItemMatch("m_00000000000000aa", PDQ, 4, 7), ItemMatch("m_00000000000000bb", PDQ, 30, 1)],
        [],
    ]
    back = contract.results_from_pb(contract.results_to_pb(queries, results))
    assert back == [QueryResult("a", results[0]), QueryResult("", [])]


def test_items_round_trip() -> None:
    items = [
        NewItem(_hashes(), ItemKind.IMAGE, "photo 2"),
        NewItem([Hash(MD5, bytes(16))], ItemKind.VIDEO),
    ]
    back = contract.items_from_pb(contract.items_to_pb(items), max_items=10, max_hashes=100)
    assert back == items
    assert [h.quality for h in back[0].hashes] == [87, None, None, None]
    [plain] = contract.items_to_pb([[Hash(MD5, bytes(16))]])
    assert plain.kind == hashes_pb2.ITEM_KIND_IMAGE and plain.label == ""


def _item(number: int, state: ItemState = ItemState.ACTIVE) -> ItemStatus:
    withdrawn = state is ItemState.WITHDRAWN
    return ItemStatus(
        case_number="K7QP-2MXR-9TDA",
        number=number,
        kind=ItemKind.IMAGE,
        state=state,
        label=None if number % 2 else "photo",
        hash_count=0 if withdrawn else 226,
        hashes_by_signal={} if withdrawn else {"pdq": 223, "phash": 1, "md5": 1, "sha256": 1},
        reported_correct=1,
        reported_wrong=2,
        created_at=T0,
        withdrawn_at=T1 if withdrawn else None,
    )


def _case(items: list[ItemStatus]) -> CaseStatus:
    return CaseStatus(
        number="K7QP-2MXR-9TDA",
        state=CaseState.ACTIVE,
        item_count=1,
        hash_count=226,
        hashes_by_signal={"pdq": 223, "phash": 1, "md5": 1, "sha256": 1},
        reported_correct=2,
        reported_wrong=4,
        created_at=T0,
        withdrawn_at=None,
        items=items,
    )


def test_items_and_cases_round_trip() -> None:
    items = [_item(1), _item(2, ItemState.WITHDRAWN)]
    for item in items:
        message = contract.item_to_pb(item)
        assert message.name == f"cases/K7QP-2MXR-9TDA/items/{item.number}"
        assert message.match_count == 3
        assert contract.item_from_pb(message) == item
    case = _case(items)
    assert contract.case_from_pb(contract.case_to_pb(case, items=True)) == case
    without = contract.case_from_pb(contract.case_to_pb(case))
    assert without.items == [] and without.hash_count == 226
    withdrawn = CaseStatus(**{**_fields(case), "state": CaseState.WITHDRAWN, "withdrawn_at": T1})
    assert contract.case_from_pb(contract.case_to_pb(withdrawn)).withdrawn_at == T1


def _fields(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]


def test_enroll_results_round_trip() -> None:
    result = EnrollResult("K7QP-2MXR-9TDA", [_item(1), _item(3)], 1, 1, 2, 452)
    message = contract.enroll_result_to_pb(result)
    assert contract.enroll_result_from_pb("k7qp2mxr9tda", message) == result


def test_accounts_and_stats_round_trip() -> None:
    org = Organisation(3, "Helpline", T0)
    assert contract.organization_from_pb(contract.organization_to_pb(org)) == org
    for record in (
        ApiKeyRecord(7, "acme", Role.PARTNER, None, "mk_ABCD", T0, None),
        ApiKeyRecord(8, "help", Role.PRACTITIONER, 3, "mk_EFGH", T0, T1),
    ):
        assert contract.api_key_from_pb(contract.api_key_to_pb(record)) == record
    stats = BankStats(
        ready=True,
        indexed={"pdq": 10, "phash": 2},
        stored={"pdq": 10, "phash": 2},
        cases={"active": 3, "withdrawn": 1},
        items=5,
        load_seconds=1.5,
    )
    assert contract.stats_from_pb(contract.stats_to_pb(stats)) == stats


def test_enums_round_trip() -> None:
    for role in Role:
        assert contract.role_from_pb(contract.role_to_pb(role)) is role
        assert contract.role_to_pb(str(role)) == contract.role_to_pb(role)
    for kind in ItemKind:
        assert contract.kind_from_pb(contract.kind_to_pb(kind)) is kind
    for verdict in (True, False):
        assert contract.verdict_from_pb(contract.verdict_to_pb(verdict)) is verdict
    for signal in SIGNALS.values():
        assert contract.signal_from_pb(contract.signal_to_pb(signal)) is signal


# -- bad values, located on their wire field


def _pdq(value: bytes = bytes(32), quality: int | None = 90) -> hashes_pb2.Hash:
    message = hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=value)
    if quality is not None:
        message.quality = quality
    return message


def _error(fn, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        fn(*args, **kwargs)
    return err.value


@pytest.mark.parametrize(
    ("queries", "field", "cls"),
    [
        ([], "queries", InvalidInput),
        ([match_pb2.Query(hashes=[_pdq()])] * 3, "queries", InvalidInput),
        ([match_pb2.Query()], "queries[0].hashes", InvalidInput),
        (
            [match_pb2.Query(hashes=[_pdq()]), match_pb2.Query(hashes=[_pdq(), _pdq(bytes(31))])],
            "queries[1].hashes[1].value",
            InvalidHash,
        ),
        (
            [match_pb2.Query(hashes=[hashes_pb2.Hash(value=bytes(32))])],
            "queries[0].hashes[0].signal_type",
            InvalidHash,
        ),
        (
            [match_pb2.Query(hashes=[hashes_pb2.Hash(signal_type=99, value=bytes(32))])],
            "queries[0].hashes[0].signal_type",
            InvalidHash,
        ),
        (
            [match_pb2.Query(hashes=[_pdq(quality=101)])],
            "queries[0].hashes[0].quality",
            LowQuality,
        ),
        (
            [match_pb2.Query(hashes=[_pdq()], max_distance=32)],
            "queries[0].max_distance",
            InvalidDistance,
        ),
        (
            [
                match_pb2.Query(hashes=[_pdq()], max_distance=9),
                match_pb2.Query(
                    hashes=[_pdq(), hashes_pb2.Hash(signal_type=2, value=bytes(8))],
                    max_distance=11,
                ),
            ],
            "queries[1].max_distance",
            InvalidDistance,
        ),
    ],
)
def test_bad_queries_are_located(queries, field: str, cls: type[InvalidInput]) -> None:
    err = _error(contract.queries_from_pb, queries, max_batch=2)
    assert (err.field, type(err)) == (field, cls)


def _new_item(*hashes: hashes_pb2.Hash, kind: int = 1, label: str = "") -> cases_pb2.NewItem:
    return cases_pb2.NewItem(kind=kind, hashes=hashes, label=label)


@pytest.mark.parametrize(
    ("items", "field", "cls"),
    [
        ([], "items", InvalidInput),
        ([_new_item(_pdq())] * 4, "items", InvalidInput),
        ([_new_item(_pdq(), _pdq(), _pdq()), _new_item(_pdq(), _pdq())], "items", InvalidInput),
        ([_new_item(_pdq()), _new_item()], "items[1].hashes", InvalidInput),
        ([_new_item(_pdq(), kind=0)], "items[0].kind", InvalidInput),
        ([_new_item(_pdq(), kind=7)], "items[0].kind", InvalidInput),
        (
            [_new_item(_pdq()), _new_item(_pdq(), _pdq(quality=49))],
            "items[1].hashes[1].quality",
            LowQuality,
        ),
        ([_new_item(_pdq(quality=None))], "items[0].hashes[0].quality", LowQuality),
        ([_new_item(_pdq(quality=-1))], "items[0].hashes[0].quality", LowQuality),
        ([_new_item(_pdq(bytes(8)))], "items[0].hashes[0].value", InvalidHash),
        ([_new_item(_pdq(), label="x" * 201)], "items[0].label", InvalidInput),
    ],
)
def test_bad_items_are_located(items, field: str, cls: type[InvalidInput]) -> None:
    err = _error(contract.items_from_pb, items, max_items=3, max_hashes=4)
    assert (err.field, type(err)) == (field, cls)


def test_error_messages_never_carry_hash_values() -> None:
    value = bytes(range(100, 132))
    for bad in ([_new_item(_pdq(value, quality=3))], [_new_item(_pdq(value[:31]))]):
        err = _error(contract.items_from_pb, bad, max_items=3, max_hashes=4)
        assert value.hex()[:8] not in str(err) and value[:31].hex()[:8] not in str(err)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cases/K7QP-2MXR-9TDA", "K7QP-2MXR-9TDA"),
        ("K7QP-2MXR-9TDA", "K7QP-2MXR-9TDA"),
        (" cases/k7qp2mxr9tda ", "k7qp2mxr9tda"),
    ],
)
def test_case_names(name: str, expected: str) -> None:
    assert contract.case_number_from_name(name) == expected


@pytest.mark.parametrize("name", ["", "cases/", "cases/A/items/1", "  "])
def test_bad_case_names(name: str) -> None:
    assert _error(contract.case_number_from_name, name).field == "name"


def test_item_names() -> None:
    name = contract.item_name("K7QP-2MXR-9TDA", 3)
    assert contract.item_ref_from_name(name) == ("K7QP-2MXR-9TDA", 3)
    for bad in (
        "cases/K7QP/items/0",
        "cases/K7QP/items/-1",
        "cases/K7QP/items/x",
        "cases//items/1",
        "cases/K7QP/items",
        "cases/K7QP/photos/1",
        f"cases/K7QP/items/{1 << 31}",
    ):
        assert _error(contract.item_ref_from_name, bad).field == "name", bad
    assert _error(contract.check_item_number, 0).field == "item_number"


def test_id_names() -> None:
    assert contract.id_from_name("organizations/12", "organizations", field="organization") == 12
    assert contract.organization_id_from_name("") is None
    for bad in ("apiKeys/12", "organizations/", "organizations/x", "organizations/0"):
        err = _error(contract.id_from_name, bad, "organizations", field="organization")
        assert err.field == "organization"
    # Out of the store's int64 range: a clear error, never an overflow further in.
    assert _error(contract.id_from_name, f"apiKeys/{1 << 63}", "apiKeys", field="name")


# -- the error table, both ways


@pytest.mark.parametrize(
    "exc",
    [
        InvalidInput("bad", field="queries[0]"),
        InvalidHash("bad hash", field="items[0].hashes[1].value"),
        LowQuality("too flat", field="items[2].hashes[5].quality"),
        InvalidDistance("too far", field="queries[0].max_distance"),
        Unauthenticated("who"),
        PermissionDenied("no"),
        NotFound("none"),
        RateLimited("slow down", retry_after=2.5),
        Conflict("withdrawn"),
        Unavailable("loading"),
    ],
)
def test_errors_cross_the_wire_as_themselves(exc: MatcherError) -> None:
    status = contract.status_of(exc)
    code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == status.code))
    assert code is contract.code_of(exc)
    back = contract.error_of(code, status.message, status.details)
    assert type(back) is type(exc) and str(back) == str(exc)
    if isinstance(exc, InvalidInput):
        assert isinstance(back, InvalidInput) and back.field == exc.field
    if isinstance(exc, RateLimited):
        assert isinstance(back, RateLimited) and back.retry_after == exc.retry_after


def test_unexpected_errors_are_internal_and_say_nothing() -> None:
    status = contract.status_of(KeyError("secret detail"))
    assert status.code == code_pb2.INTERNAL and status.message == "internal error"
    assert not status.details
    back = contract.error_of(grpc.StatusCode.INTERNAL, status.message)
    assert type(back) is MatcherError and "INTERNAL" in str(back)


def test_error_of_without_details_uses_the_code() -> None:
    assert type(contract.error_of(grpc.StatusCode.INVALID_ARGUMENT, "x")) is InvalidInput
    assert type(contract.error_of(grpc.StatusCode.DEADLINE_EXCEEDED, "")) is Unavailable
    retry = contract.error_of(grpc.StatusCode.RESOURCE_EXHAUSTED, "x")
    assert isinstance(retry, RateLimited) and retry.retry_after == 1.0


def test_error_info_cannot_contradict_the_code() -> None:
    status = contract.status_of(NotFound("none"))
    back = contract.error_of(grpc.StatusCode.INVALID_ARGUMENT, "x", status.details)
    assert type(back) is InvalidInput
    bad = error_details_pb2.BadRequest()
    assert not any(d.Is(bad.DESCRIPTOR) for d in status.details)


def test_every_error_class_has_a_code() -> None:
    codes = {cls: code for cls, code in contract.ERROR_CODES}
    for cls in (InvalidInput, NotFound, Unauthenticated, PermissionDenied, RateLimited):
        assert cls in codes
    assert len(codes) == len(contract.ERROR_CODES)
