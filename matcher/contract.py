"""The contract's one translator: protobuf ``matcher.v1`` <-> ``matcher.records`` values.

The servicer and the SDK both convert here, in both directions, so the two sides cannot drift:
what the SDK sends is built by the same code that the server reads it back with (the tests
round-trip every value through it).

**Validation happens here, once.** Every inbound value is checked when it is converted, and a
bad one raises ``InvalidInput`` located on its *wire* field with ``InvalidInput.at`` (the domain
values name the field inside themselves, this module adds where they sit in the request):

>>> from matcher.v1 import cases_pb2, hashes_pb2
>>> pdq = hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=bytes(32), quality=10)
>>> items = [cases_pb2.NewItem(kind=1, hashes=[pdq])]
>>> try:
...     items_from_pb(items, max_items=1000, max_hashes=100_000)
... except InvalidInput as exc:
...     print(exc.field)
items[0].hashes[0].quality

Messages never repeat a hash value (they end up in logs).

Also here: resource names (``cases/{n}``, ``cases/{n}/items/{k}``, ``organizations/{id}``,
``apiKeys/{id}``), and the one table between error classes and gRPC status codes
(``ERROR_CODES``): the service maps an exception to a status with ``status_of``, the SDK maps a
status back to the same exception class with ``error_of``. This module imports neither the bank
nor the service, so the SDK stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2

from matcher.errors import (
    Allowlisted,
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
    AllowlistEntry,
    AllowlistSource,
    ApiKeyRecord,
    BankStats,
    CaseState,
    CaseStatus,
    EnrollResult,
    ItemKind,
    ItemMatch,
    ItemState,
    ItemStatus,
    KeyPolicy,
    MatchBand,
    NewApiKey,
    NewCase,
    NewItem,
    Organisation,
    PartnerReport,
    Quarantine,
    QuarantineReason,
    Query,
    QueryResult,
    ReportReason,
    ReviewDecision,
    ReviewEntry,
)
from matcher.signals import SIGNALS, Hash, SignalType
from matcher.v1 import admin_pb2, cases_pb2, hashes_pb2, match_pb2

__all__ = [
    "ERROR_CODES",
    "ERROR_DOMAIN",
    "MAX_CASE_NUMBER_LENGTH",
    "MAX_ID",
    "MAX_NAME_LENGTH",
    "MAX_NOTE_LENGTH",
    "MAX_SECRET_LENGTH",
    "allowlist_entry_from_pb",
    "allowlist_entry_name",
    "allowlist_entry_to_pb",
    "allowlist_hashes_from_pb",
    "api_key_from_pb",
    "api_key_name",
    "api_key_to_pb",
    "as_items",
    "case_from_pb",
    "case_name",
    "case_number_from_name",
    "case_secret_from_pb",
    "case_to_pb",
    "check_item_number",
    "code_of",
    "display_name_from_pb",
    "enroll_result_from_pb",
    "enroll_result_to_pb",
    "error_of",
    "hash_from_pb",
    "hash_to_pb",
    "id_from_name",
    "item_from_pb",
    "item_id_from_pb",
    "item_name",
    "item_ref_from_name",
    "item_to_pb",
    "items_from_pb",
    "items_to_pb",
    "key_policy_from_pb",
    "key_policy_to_pb",
    "kind_from_pb",
    "kind_to_pb",
    "new_api_key_from_pb",
    "new_case_from_pb",
    "organization_from_pb",
    "organization_id_from_name",
    "organization_name",
    "organization_to_pb",
    "quarantine_from_pb",
    "quarantine_to_pb",
    "queries_from_pb",
    "queries_to_pb",
    "query_to_pb",
    "reason_from_pb",
    "reason_to_pb",
    "results_from_pb",
    "results_to_pb",
    "review_decision_from_pb",
    "review_decision_to_pb",
    "review_entry_from_pb",
    "review_entry_to_pb",
    "review_note_from_pb",
    "role_from_pb",
    "role_to_pb",
    "signal_distances_from_pb",
    "signal_from_pb",
    "signal_to_pb",
    "stats_from_pb",
    "stats_to_pb",
    "status_of",
    "timestamp",
    "verdict_from_pb",
    "verdict_to_pb",
]

MAX_ID = (1 << 63) - 1
"""The largest id a resource name may carry (the store's ids are signed 64-bit)."""

_MAX_ITEM_NUMBER = (1 << 31) - 1  # the wire's item_number is an int32

MAX_CASE_NUMBER_LENGTH = 64
"""The longest case number read (ours are 14 characters; typed forms add spaces)."""

MAX_SECRET_LENGTH = 200
"""The longest secret read (ours are 23 characters)."""


# -- enums: every table is read from the contract, so the two cannot drift apart


def _enum_table(enum: Any, prefix: str, members: Iterable[Any]) -> dict[Any, Any]:
    return {m: enum.Value(f"{prefix}{m.name.upper()}") for m in members}


_SIGNAL_TO_PB: dict[str, Any] = {
    name: hashes_pb2.SignalType.Value(f"SIGNAL_TYPE_{name.upper()}") for name in SIGNALS
}
_SIGNAL_FROM_PB: dict[int, SignalType] = {v: SIGNALS[k] for k, v in _SIGNAL_TO_PB.items()}
_ROLE_TO_PB = _enum_table(admin_pb2.Role, "ROLE_", Role)
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}
_CASE_STATE_TO_PB = _enum_table(cases_pb2.CaseState, "CASE_STATE_", CaseState)
_CASE_STATE_FROM_PB = {v: k for k, v in _CASE_STATE_TO_PB.items()}
_ITEM_STATE_TO_PB = _enum_table(cases_pb2.ItemState, "ITEM_STATE_", ItemState)
_ITEM_STATE_FROM_PB = {v: k for k, v in _ITEM_STATE_TO_PB.items()}
_KIND_TO_PB = _enum_table(hashes_pb2.ItemKind, "ITEM_KIND_", ItemKind)
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_BAND_TO_PB = _enum_table(match_pb2.MatchBand, "MATCH_BAND_", MatchBand)
_BAND_FROM_PB = {v: k for k, v in _BAND_TO_PB.items()}
_REASON_TO_PB = _enum_table(match_pb2.ReportReason, "REPORT_REASON_", ReportReason)
_REASON_FROM_PB = {v: k for k, v in _REASON_TO_PB.items()}
_QUARANTINE_TO_PB = _enum_table(cases_pb2.QuarantineReason, "QUARANTINE_REASON_", QuarantineReason)
_QUARANTINE_FROM_PB = {v: k for k, v in _QUARANTINE_TO_PB.items()}
_DECISION_TO_PB = _enum_table(cases_pb2.ReviewDecision, "REVIEW_DECISION_", ReviewDecision)
_DECISION_FROM_PB = {v: k for k, v in _DECISION_TO_PB.items()}


def signal_from_pb(value: int, *, field: str = "signal_type") -> SignalType:
    """The signal type of an enum number, or ``InvalidHash`` (unspecified or unknown)."""
    try:
        return _SIGNAL_FROM_PB[value]
    except KeyError:
        raise InvalidHash("signal_type must be set to a known signal type", field=field) from None


def signal_to_pb(signal: SignalType) -> hashes_pb2.SignalType:
    """The enum number of a signal type."""
    return _SIGNAL_TO_PB[signal.name]


def role_from_pb(value: int, *, field: str = "role") -> Role:
    """The role of an enum number, or ``InvalidInput`` (unspecified or unknown)."""
    try:
        return _ROLE_FROM_PB[value]
    except KeyError:
        raise InvalidInput("role must be partner, practitioner or admin", field=field) from None


def role_to_pb(role: Role | str) -> admin_pb2.Role:
    """The enum number of a role (or of its name: ``"partner"``); ``InvalidInput`` if unknown."""
    try:
        return _ROLE_TO_PB[Role(role)]
    except ValueError:
        raise InvalidInput("role must be partner, practitioner or admin", field="role") from None


def kind_from_pb(value: int, *, field: str = "kind") -> ItemKind:
    """The item kind of an enum number, or ``InvalidInput`` (unspecified or unknown)."""
    try:
        return _KIND_FROM_PB[value]
    except KeyError:
        raise InvalidInput("kind must be image or video", field=field) from None


def kind_to_pb(kind: ItemKind) -> hashes_pb2.ItemKind:
    """The enum number of an item kind."""
    return _KIND_TO_PB[ItemKind(kind)]


def verdict_from_pb(value: int, *, field: str = "verdict") -> bool:
    """True for a CORRECT verdict, False for WRONG; ``InvalidInput`` when unset."""
    if value == match_pb2.VERDICT_CORRECT:
        return True
    if value == match_pb2.VERDICT_WRONG:
        return False
    raise InvalidInput("verdict must be CORRECT or WRONG", field=field)


def verdict_to_pb(correct: bool) -> match_pb2.Verdict:
    """The verdict enum number for a partner's "right" (True) or "wrong" (False)."""
    return match_pb2.VERDICT_CORRECT if correct else match_pb2.VERDICT_WRONG


def reason_from_pb(value: int, *, field: str = "reason") -> ReportReason | None:
    """The reason code of an enum number (unspecified: None); ``InvalidInput`` if unknown."""
    if value == match_pb2.REPORT_REASON_UNSPECIFIED:
        return None
    try:
        return _REASON_FROM_PB[value]
    except KeyError:
        raise InvalidInput(
            "reason must be NOT_THE_IMAGE, WIDELY_SHARED, FEATURELESS, OTHER or unset",
            field=field,
        ) from None


def reason_to_pb(reason: ReportReason | str | None) -> match_pb2.ReportReason:
    """The enum number of a reason code (or of its name: ``"widely_shared"``; None: unset)."""
    if reason is None:
        return match_pb2.REPORT_REASON_UNSPECIFIED
    try:
        return _REASON_TO_PB[ReportReason(reason)]
    except ValueError:
        raise InvalidInput(
            "reason must be not_the_image, widely_shared, featureless or other", field="reason"
        ) from None


def review_decision_from_pb(value: int, *, field: str = "decision") -> ReviewDecision:
    """The review decision of an enum number; ``InvalidInput`` when unset or unknown."""
    try:
        return _DECISION_FROM_PB[value]
    except KeyError:
        raise InvalidInput("decision must be RESTORE or WITHDRAW", field=field) from None


def review_decision_to_pb(decision: ReviewDecision | str) -> cases_pb2.ReviewDecision:
    """The enum number of a review decision (or of its name: ``"restore"``)."""
    try:
        return _DECISION_TO_PB[ReviewDecision(decision)]
    except ValueError:
        raise InvalidInput("decision must be restore or withdraw", field="decision") from None


MAX_NOTE_LENGTH = 100
"""The longest review note accepted (it goes into an audit row)."""


def review_note_from_pb(note: str, *, field: str = "note") -> str:
    """A review note, checked for length (the bank refuses one that looks like a hash)."""
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidInput(f"a note has at most {MAX_NOTE_LENGTH} characters", field=field)
    return note


def timestamp(at: datetime | None) -> Timestamp | None:
    """A protobuf timestamp (None stays None, so the field stays unset)."""
    if at is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _time(message: Any, name: str) -> datetime | None:
    # Aware UTC datetimes, as the store hands them out: a round trip compares equal.
    if not message.HasField(name):
        return None
    at: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return at


def _required_time(message: Any, name: str) -> datetime:
    at = _time(message, name)
    return at if at is not None else datetime.fromtimestamp(0, UTC)


# -- resource names


def _is_number(text: str, most: int) -> bool:
    # ASCII digits only ("²".isdigit() is True, and int() refuses it), and few of them (int()
    # of thousands of digits is slow, then refused).
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


MAX_NAME_LENGTH = 200
"""The longest display name (of an organisation or an API key) stored."""


def display_name_from_pb(name: str, *, field: str = "display_name") -> str:
    """A display name as sent, stripped: required, at most ``MAX_NAME_LENGTH`` characters."""
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{field} is at most {MAX_NAME_LENGTH} characters", field=field)
    name = name.strip()
    if not name:
        raise InvalidInput(f"{field} is required", field=field)
    return name


def case_name(number: str) -> str:
    """``cases/{number}``."""
    return f"cases/{number}"


def case_number_from_name(name: str, *, field: str = "name") -> str:
    """The case number in ``cases/{number}`` (a bare number is accepted too).

    The number is returned as typed; the bank normalises it (``normalise_case_number``).
    """
    number = name.strip().removeprefix("cases/").strip()
    if not number or "/" in number or len(number) > MAX_CASE_NUMBER_LENGTH:
        raise InvalidInput("a case name like cases/{case_number} is required", field=field)
    return number


def item_name(case_number: str, number: int) -> str:
    """``cases/{case_number}/items/{number}``."""
    return f"cases/{case_number}/items/{number}"


def item_ref_from_name(name: str, *, field: str = "name") -> tuple[str, int]:
    """The case number and item number in ``cases/{case_number}/items/{number}``."""
    parts = name.strip().split("/")
    if (
        len(parts) != 4
        or parts[0] != "cases"
        or not parts[1].strip()
        or parts[2] != "items"
        or not _is_number(parts[3], 10)
        or not 1 <= int(parts[3]) <= _MAX_ITEM_NUMBER
    ):
        raise InvalidInput(
            "an item name like cases/{case_number}/items/{number} is required", field=field
        )
    return parts[1].strip(), int(parts[3])


def check_item_number(number: int, *, field: str = "item_number") -> int:
    """An item number as sent: positive (items are numbered from 1)."""
    if number < 1:
        raise InvalidInput("item_number must be 1 or more (items are numbered from 1)", field=field)
    return number


def case_secret_from_pb(case_number: str, secret: str) -> tuple[str, str]:
    """A victim's case number and secret as sent; ``InvalidInput`` naming the empty one.
    Whether they match is the bank's to say (``NotFound`` either way), and the bank
    normalises the number."""
    if len(case_number) > MAX_CASE_NUMBER_LENGTH:
        raise InvalidInput(
            f"case_number is at most {MAX_CASE_NUMBER_LENGTH} characters", field="case_number"
        )
    if len(secret) > MAX_SECRET_LENGTH:
        raise InvalidInput(f"secret is at most {MAX_SECRET_LENGTH} characters", field="secret")
    if not case_number.strip():
        raise InvalidInput("case_number is required", field="case_number")
    if not secret.strip():
        raise InvalidInput("secret is required", field="secret")
    return case_number.strip(), secret


def item_id_from_pb(item_id: str, *, field: str = "item_id") -> str:
    """A partner's item id as sent (the bank decodes it: one that names no item is
    ``NotFound``); ``InvalidInput`` when empty."""
    item_id = item_id.strip()
    if not item_id:
        raise InvalidInput("item_id is required (the item_id of a MatchResult)", field=field)
    return item_id


def id_from_name(name: str, collection: str, *, field: str) -> int:
    """The integer id in ``{collection}/{id}``, or ``InvalidInput`` (also when out of range)."""
    prefix, _, tail = name.strip().partition("/")
    if prefix != collection or not _is_number(tail, 19) or not 1 <= int(tail) <= MAX_ID:
        raise InvalidInput(f"expected a name like {collection}/123", field=field)
    return int(tail)


def organization_name(org_id: int | None) -> str:
    """``organizations/{id}``, or "" for none."""
    return f"organizations/{org_id}" if org_id is not None else ""


def organization_id_from_name(name: str, *, field: str = "organization") -> int | None:
    """The organisation id in ``organizations/{id}``; None when the field is empty."""
    return id_from_name(name, "organizations", field=field) if name.strip() else None


def api_key_name(key_id: int) -> str:
    """``apiKeys/{id}``."""
    return f"apiKeys/{key_id}"


def allowlist_entry_name(entry_id: int) -> str:
    """``allowlistEntries/{id}``."""
    return f"allowlistEntries/{entry_id}"


_ALLOWLIST_SOURCE = {
    AllowlistSource.SEED: admin_pb2.ALLOWLIST_SOURCE_SEED,
    AllowlistSource.ADMIN: admin_pb2.ALLOWLIST_SOURCE_ADMIN,
}
_ALLOWLIST_SOURCE_FROM_PB = {v: k for k, v in _ALLOWLIST_SOURCE.items()}
MAX_ALLOWLIST_HASHES = 10_000


def allowlist_entry_to_pb(entry: AllowlistEntry) -> admin_pb2.AllowlistEntry:
    """The wire form of an allowlist entry (never its value: it has none here)."""
    return admin_pb2.AllowlistEntry(
        name=allowlist_entry_name(entry.id),
        signal_type=_SIGNAL_TO_PB[entry.signal],
        label=entry.label,
        source=_ALLOWLIST_SOURCE[entry.source],
        create_time=timestamp(entry.created_at),
    )


def allowlist_entry_from_pb(message: admin_pb2.AllowlistEntry) -> AllowlistEntry:
    """An allowlist entry from its wire form."""
    return AllowlistEntry(
        id=id_from_name(message.name, "allowlistEntries", field="name"),
        signal=signal_from_pb(message.signal_type).name,
        label=message.label,
        source=_ALLOWLIST_SOURCE_FROM_PB.get(message.source, AllowlistSource.ADMIN),
        created_at=_required_time(message, "create_time"),
    )


def allowlist_hashes_from_pb(messages: Sequence[hashes_pb2.Hash]) -> list[Hash]:
    """Hashes to allowlist: at least one, at most 10,000, each well formed (no quality rule:
    a flat picture is exactly what an allowlist holds)."""
    if not messages:
        raise InvalidInput("give at least one hash to add", field="hashes")
    _batch_size(len(messages), MAX_ALLOWLIST_HASHES, "hash", "hashes")
    return _hashes_from_pb(messages, "hashes")


# -- hashes and queries


def hash_from_pb(message: hashes_pb2.Hash, *, field: str = "") -> Hash:
    """A ``Hash`` from its wire form: signal type known, length exact, quality 0-100 if sent."""
    where = f"{field}." if field else ""
    signal = _SIGNAL_FROM_PB.get(message.signal_type)
    if signal is None:
        raise InvalidHash(
            "signal_type must be set to a known signal type", field=f"{where}signal_type"
        )
    value = message.value
    if len(value) != signal.byte_length:
        raise InvalidHash(
            f"{signal.name} hash must be {signal.byte_length} bytes, got {len(value)}",
            field=f"{where}value",
        )
    if message.HasField("quality"):
        quality: int | None = message.quality
        if not 0 <= message.quality <= 100:
            raise LowQuality(
                f"quality must be 0-100, got {message.quality}", field=f"{where}quality"
            )
    else:
        quality = None
    return Hash(signal, value, quality)


def hash_to_pb(h: Hash) -> hashes_pb2.Hash:
    """The wire form of a hash (with its quality when it has one)."""
    message = hashes_pb2.Hash(signal_type=_SIGNAL_TO_PB[h.signal.name], value=h.value)
    if h.quality is not None:
        message.quality = h.quality
    return message


def _hashes_from_pb(messages: Sequence[hashes_pb2.Hash], field: str) -> list[Hash]:
    # Every upload's 25-40 hashes pass here on the event loop: the usual case (all valid)
    # checks them in one loop and names no field; a bad one sends the whole list through
    # ``hash_from_pb``, which says which field is wrong and why.
    known = _SIGNAL_FROM_PB.get
    out = []
    for m in messages:
        signal = known(m.signal_type)
        if signal is None or len(m.value) != signal.byte_length:
            break
        quality = m.quality if m.HasField("quality") else None
        if quality is not None and not 0 <= quality <= 100:
            break
        out.append(Hash(signal, m.value, quality))
    else:
        return out
    return [hash_from_pb(m, field=f"{field}[{i}]") for i, m in enumerate(messages)]


def _batch_size(n: int, most: int, what: str, field: str) -> None:
    if not n:
        raise InvalidInput(f"at least one {what} is required", field=field)
    if n > most:
        raise InvalidInput(f"at most {most} {what}s per request, got {n}", field=field)


def queries_from_pb(
    messages: Sequence[match_pb2.Query],
    *,
    max_batch: int,
    max_query_hashes: int = 64,
    max_hashes: int = 32_000,
    field: str = "queries",
) -> list[Query]:
    """Validated queries; ``InvalidInput`` at the bad field for an empty or oversized batch
    (more than ``max_batch`` queries or ``max_hashes`` hashes over all of them), an empty
    query or one of more than ``max_query_hashes`` hashes, a malformed hash or a distance
    above a signal type's maximum. The sizes are checked before any hash is read."""
    _batch_size(len(messages), max_batch, "query", field)
    total = 0
    for i, q in enumerate(messages):
        n = len(q.hashes)
        if n > max_query_hashes:
            raise InvalidInput(
                f"at most {max_query_hashes} hashes per query, got {n}: one query is one image",
                field=f"{field}[{i}].hashes",
            )
        total += n
    if total > max_hashes:
        raise InvalidInput(
            f"at most {max_hashes} hashes per request, got {total}: split the batch",
            field=field,
        )
    queries = []
    for i, q in enumerate(messages):
        where = f"{field}[{i}]"
        if not q.hashes:
            raise InvalidInput("a query needs at least one hash", field=f"{where}.hashes")
        hashes = _hashes_from_pb(q.hashes, f"{where}.hashes")
        distance = q.max_distance if q.HasField("max_distance") else None
        try:
            queries.append(Query(hashes, distance, q.query_id))
        except InvalidInput as exc:
            raise exc.at(where) from None
    return queries


def query_to_pb(query: Query | Sequence[Hash]) -> match_pb2.Query:
    """The wire form of a query (a plain sequence of hashes is a query with defaults).

    The wire carries one ``max_distance`` for all of a query's hashes: a per-signal mapping
    sends its one distance when it names every signal type of the query with the same value,
    and is refused otherwise (split the query instead), never silently changed.
    """
    if not isinstance(query, Query):
        query = Query(list(query))
    message = match_pb2.Query(hashes=[hash_to_pb(h) for h in query.hashes], query_id=query.query_id)
    distance = query.max_distance
    if isinstance(distance, Mapping):
        asked = {query.distance_for(h.signal) for h in query.hashes}
        if len(asked) > 1 or not {h.signal.name for h in query.hashes} <= set(distance):
            raise InvalidDistance(
                "the wire carries one max_distance per query: send hashes that need different "
                "distances as separate queries",
                field="max_distance",
            )
        distance = asked.pop() if asked else None
    if distance is not None:
        message.max_distance = distance
    return message


def queries_to_pb(queries: Iterable[Query | Sequence[Hash]]) -> list[match_pb2.Query]:
    """The wire form of a batch of queries."""
    return [query_to_pb(q) for q in queries]


def _match_to_pb(m: ItemMatch) -> match_pb2.MatchResult:
    message = match_pb2.MatchResult(
        item_id=m.item_id,
        signal_type=_SIGNAL_TO_PB[m.signal.name],
        hits=m.hits,
        band=_BAND_TO_PB[m.band],
    )
    if m.distance is not None:  # only for keys granted exact distances
        message.distance = m.distance
    return message


def results_to_pb(
    queries: Sequence[Query], results: Sequence[Sequence[ItemMatch]]
) -> list[match_pb2.QueryResult]:
    """One ``QueryResult`` per query (its ``query_id`` echoed), matches in the bank's order."""
    return [
        match_pb2.QueryResult(query_id=q.query_id, matches=[_match_to_pb(m) for m in matches])
        for q, matches in zip(queries, results, strict=True)
    ]


def results_from_pb(messages: Iterable[match_pb2.QueryResult]) -> list[QueryResult]:
    """The SDK's reading of ``QueryResult`` messages."""
    return [
        QueryResult(
            r.query_id,
            [
                ItemMatch(
                    m.item_id,
                    signal_from_pb(m.signal_type),
                    m.distance if m.HasField("distance") else None,
                    m.hits,
                    _BAND_FROM_PB.get(m.band, MatchBand.WEAK),
                )
                for m in r.matches
            ],
        )
        for r in messages
    ]


# -- items and cases


def _located(exc: InvalidInput, where: str) -> InvalidInput:
    # The domain names the hash that is too flat (``hashes[3]``); on the wire the bad field is
    # that hash's quality.
    if isinstance(exc, LowQuality) and exc.field.startswith("hashes[") and "." not in exc.field:
        exc = LowQuality(exc.reason, field=f"{exc.field}.quality")
    return exc.at(where)


def items_from_pb(
    messages: Sequence[cases_pb2.NewItem],
    *,
    max_items: int,
    max_hashes: int,
    field: str = "items",
) -> list[NewItem]:
    """Validated items to enroll; ``InvalidInput`` at the bad field for an empty or oversized
    call (at most ``max_items`` items and ``max_hashes`` hashes in all), a missing kind, a
    malformed or too flat hash, or an over-long label."""
    _batch_size(len(messages), max_items, "item", field)
    total = sum(len(m.hashes) for m in messages)
    if total > max_hashes:
        raise InvalidInput(
            f"at most {max_hashes} hashes per request, got {total}: split the items over "
            "several calls",
            field=field,
        )
    items = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        kind = kind_from_pb(m.kind, field=f"{where}.kind")
        hashes = _hashes_from_pb(m.hashes, f"{where}.hashes")
        try:
            items.append(NewItem(hashes, kind, m.label or None))
        except InvalidInput as exc:
            raise _located(exc, where) from None
    return items


def as_items(items: Iterable[NewItem | Sequence[Hash]], *, field: str = "items") -> list[NewItem]:
    """``NewItem`` values for what a caller passed (a plain sequence of hashes is an image
    item), errors located as the server would locate them (``items[1].hashes[0].quality``)."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, NewItem):
            try:
                item = NewItem(list(item))
            except InvalidInput as exc:
                raise _located(exc, f"{field}[{i}]") from None
        out.append(item)
    return out


def items_to_pb(items: Iterable[NewItem | Sequence[Hash]]) -> list[cases_pb2.NewItem]:
    """The wire form of items to enroll (a plain sequence of hashes is an image item)."""
    return [
        cases_pb2.NewItem(
            kind=_KIND_TO_PB[item.kind],
            hashes=[hash_to_pb(h) for h in item.hashes],
            label=item.label or "",
        )
        for item in as_items(items)
    ]


def _counts_to_pb(counts: Mapping[str, int]) -> list[hashes_pb2.SignalCount]:
    return [
        hashes_pb2.SignalCount(signal_type=_SIGNAL_TO_PB[name], count=n)
        for name, n in sorted(counts.items())
    ]


def _counts_from_pb(messages: Iterable[hashes_pb2.SignalCount]) -> dict[str, int]:
    return {signal_from_pb(c.signal_type).name: c.count for c in messages}


def quarantine_to_pb(q: Quarantine | None) -> cases_pb2.Quarantine | None:
    """The wire form of an open quarantine (None stays None: the field stays unset)."""
    if q is None:
        return None
    return cases_pb2.Quarantine(
        reason=_QUARANTINE_TO_PB[q.reason],
        description=q.description,
        since=timestamp(q.since),
        partners=q.partners,
        matches=q.matches,
    )


def quarantine_from_pb(message: cases_pb2.Quarantine) -> Quarantine:
    """The SDK's reading of a ``Quarantine``."""
    return Quarantine(
        _QUARANTINE_FROM_PB.get(message.reason, QuarantineReason.REPORTS),
        _required_time(message, "since"),
        partners=message.partners,
        matches=message.matches,
    )


def _partner_report_to_pb(r: PartnerReport) -> cases_pb2.PartnerReport:
    return cases_pb2.PartnerReport(
        partner=r.partner,
        verdict=verdict_to_pb(r.correct),
        reason=reason_to_pb(r.reason),
        report_time=timestamp(r.at),
    )


def _partner_report_from_pb(m: cases_pb2.PartnerReport) -> PartnerReport:
    return PartnerReport(
        partner=m.partner,
        correct=m.verdict == match_pb2.VERDICT_CORRECT,
        reason=_REASON_FROM_PB.get(m.reason),
        at=_required_time(m, "report_time"),
    )


def review_entry_to_pb(entry: ReviewEntry) -> cases_pb2.ReviewQueueEntry:
    """The wire form of a review queue entry."""
    return cases_pb2.ReviewQueueEntry(
        name=entry.name,
        case_number=entry.case_number,
        item_number=entry.number,
        label=entry.label or "",
        quarantine=quarantine_to_pb(entry.quarantine),
        reported_correct=entry.reported_correct,
        reported_wrong=entry.reported_wrong,
        create_time=timestamp(entry.created_at),
        review_time=timestamp(entry.reviewed_at),
        organization=organization_name(entry.org_id),
    )


def review_entry_from_pb(message: cases_pb2.ReviewQueueEntry) -> ReviewEntry:
    """The SDK's reading of a ``ReviewQueueEntry``."""
    return ReviewEntry(
        case_number=message.case_number,
        number=message.item_number,
        label=message.label or None,
        quarantine=quarantine_from_pb(message.quarantine),
        reported_correct=message.reported_correct,
        reported_wrong=message.reported_wrong,
        created_at=_required_time(message, "create_time"),
        reviewed_at=_time(message, "review_time"),
        org_id=organization_id_from_name(message.organization),
    )


def item_to_pb(item: ItemStatus) -> cases_pb2.Item:
    """The wire form of an item: counts and dates, never a hash value."""
    return cases_pb2.Item(
        name=item.name,
        number=item.number,
        kind=_KIND_TO_PB[item.kind],
        state=_ITEM_STATE_TO_PB[item.state],
        label=item.label or "",
        hash_count=item.hash_count,
        hash_counts=_counts_to_pb(item.hashes_by_signal),
        match_count=item.match_count,
        reported_correct=item.reported_correct,
        reported_wrong=item.reported_wrong,
        create_time=timestamp(item.created_at),
        withdraw_time=timestamp(item.withdrawn_at),
        quarantine=quarantine_to_pb(item.quarantine),
        review_time=timestamp(item.reviewed_at),
        partner_reports=[_partner_report_to_pb(r) for r in item.partner_reports],
    )


def item_from_pb(message: cases_pb2.Item) -> ItemStatus:
    """The SDK's reading of an ``Item`` (its case number comes from its resource name)."""
    case_number, _ = item_ref_from_name(message.name)
    return ItemStatus(
        case_number=case_number,
        number=message.number,
        kind=_KIND_FROM_PB.get(message.kind, ItemKind.IMAGE),
        state=_ITEM_STATE_FROM_PB.get(message.state, ItemState.ACTIVE),
        label=message.label or None,
        hash_count=message.hash_count,
        hashes_by_signal=_counts_from_pb(message.hash_counts),
        reported_correct=message.reported_correct,
        reported_wrong=message.reported_wrong,
        created_at=_required_time(message, "create_time"),
        withdrawn_at=_time(message, "withdraw_time"),
        quarantine=quarantine_from_pb(message.quarantine)
        if message.HasField("quarantine")
        else None,
        reviewed_at=_time(message, "review_time"),
        partner_reports=tuple(_partner_report_from_pb(r) for r in message.partner_reports),
    )


def case_to_pb(status: CaseStatus, *, items: bool = False) -> cases_pb2.Case:
    """The wire form of a case; with ``items``, every item (GetCase, GetCaseWithSecret)."""
    return cases_pb2.Case(
        name=case_name(status.number),
        case_number=status.number,
        state=_CASE_STATE_TO_PB[status.state],
        hash_count=status.hash_count,
        hash_counts=_counts_to_pb(status.hashes_by_signal),
        match_count=status.match_count,
        reported_correct=status.reported_correct,
        reported_wrong=status.reported_wrong,
        create_time=timestamp(status.created_at),
        withdraw_time=timestamp(status.withdrawn_at),
        item_count=status.item_count,
        items=[item_to_pb(i) for i in status.items] if items else [],
    )


def case_from_pb(message: cases_pb2.Case) -> CaseStatus:
    """The SDK's reading of a ``Case`` (``org_id`` stays None: the wire does not carry it)."""
    return CaseStatus(
        number=message.case_number,
        state=_CASE_STATE_FROM_PB.get(message.state, CaseState.ACTIVE),
        item_count=message.item_count,
        hash_count=message.hash_count,
        hashes_by_signal=_counts_from_pb(message.hash_counts),
        reported_correct=message.reported_correct,
        reported_wrong=message.reported_wrong,
        created_at=_required_time(message, "create_time"),
        withdrawn_at=_time(message, "withdraw_time"),
        items=[item_from_pb(i) for i in message.items],
    )


def enroll_result_to_pb(result: EnrollResult) -> cases_pb2.AddItemsResponse:
    """The wire form of what one enrollment committed."""
    return cases_pb2.AddItemsResponse(
        items=[item_to_pb(i) for i in result.items],
        added=result.added,
        existing=result.existing,
        item_count=result.item_count,
        hash_count=result.hash_count,
    )


def enroll_result_from_pb(case_number: str, message: cases_pb2.AddItemsResponse) -> EnrollResult:
    """The SDK's reading of an ``AddItemsResponse`` for case ``case_number``."""
    items = [item_from_pb(i) for i in message.items]
    return EnrollResult(
        case_number=items[0].case_number if items else case_number,
        items=items,
        added=message.added,
        existing=message.existing,
        item_count=message.item_count,
        hash_count=message.hash_count,
    )


def new_case_from_pb(message: cases_pb2.CreateCaseResponse) -> NewCase:
    """The SDK's reading of a ``CreateCaseResponse``."""
    return NewCase(message.case.case_number, message.withdrawal_secret)


# -- accounts and stats


def organization_to_pb(org: Organisation) -> admin_pb2.Organization:
    """The wire form of an organisation."""
    return admin_pb2.Organization(
        name=organization_name(org.id),
        display_name=org.name,
        create_time=timestamp(org.created_at),
    )


def organization_from_pb(message: admin_pb2.Organization) -> Organisation:
    """The SDK's reading of an ``Organization``."""
    return Organisation(
        id=id_from_name(message.name, "organizations", field="name"),
        name=message.display_name,
        created_at=_required_time(message, "create_time"),
    )


def key_policy_to_pb(policy: KeyPolicy) -> admin_pb2.KeyPolicy:
    """The wire form of a key's policy."""
    return admin_pb2.KeyPolicy(
        exact_distances=policy.exact_distances,
        max_distances=[
            admin_pb2.SignalDistance(signal_type=_SIGNAL_TO_PB[name], distance=d)
            for name, d in sorted(policy.max_distance.items())
        ],
        daily_hash_budget=policy.daily_hashes or 0,
        suspend_time=timestamp(policy.suspended_at),
        suspend_reason=policy.suspend_reason,
        named_in_reports=policy.named_in_reports,
    )


def signal_distances_from_pb(
    messages: Iterable[admin_pb2.SignalDistance], *, field: str = "max_distances"
) -> dict[str, int]:
    """Per-signal distances as sent (the bank checks their range)."""
    out = {}
    for i, m in enumerate(messages):
        out[signal_from_pb(m.signal_type, field=f"{field}[{i}].signal_type").name] = m.distance
    return out


def key_policy_from_pb(message: admin_pb2.KeyPolicy) -> KeyPolicy:
    """The SDK's reading of a ``KeyPolicy``."""
    return KeyPolicy(
        exact_distances=message.exact_distances,
        max_distance=signal_distances_from_pb(message.max_distances),
        daily_hashes=message.daily_hash_budget or None,
        suspended_at=_time(message, "suspend_time"),
        suspend_reason=message.suspend_reason,
        named_in_reports=message.named_in_reports,
    )


def api_key_to_pb(record: ApiKeyRecord, policy: KeyPolicy | None = None) -> admin_pb2.ApiKey:
    """The wire form of an API key's record (never its key material), with its policy."""
    return admin_pb2.ApiKey(
        name=api_key_name(record.id),
        display_name=record.name,
        role=_ROLE_TO_PB[record.role],
        organization=organization_name(record.org_id),
        key_prefix=record.prefix,
        create_time=timestamp(record.created_at),
        revoke_time=timestamp(record.revoked_at),
        policy=key_policy_to_pb(policy or KeyPolicy()),
    )


def api_key_from_pb(message: admin_pb2.ApiKey) -> ApiKeyRecord:
    """The SDK's reading of an ``ApiKey``."""
    return ApiKeyRecord(
        id=id_from_name(message.name, "apiKeys", field="name"),
        name=message.display_name,
        role=role_from_pb(message.role),
        org_id=organization_id_from_name(message.organization),
        prefix=message.key_prefix,
        created_at=_required_time(message, "create_time"),
        revoked_at=_time(message, "revoke_time"),
    )


def new_api_key_from_pb(message: admin_pb2.CreateApiKeyResponse) -> NewApiKey:
    """The SDK's reading of a ``CreateApiKeyResponse``."""
    return NewApiKey(api_key_from_pb(message.api_key), message.key)


def stats_to_pb(stats: BankStats) -> admin_pb2.GetBankStatsResponse:
    """The wire form of the bank's sizes (never a hash value)."""
    return admin_pb2.GetBankStatsResponse(
        ready=stats.ready,
        indexed=_counts_to_pb(stats.indexed),
        active_cases=stats.cases.get(CaseState.ACTIVE, 0),
        withdrawn_cases=stats.cases.get(CaseState.WITHDRAWN, 0),
        index_load_seconds=stats.load_seconds or 0.0,
        active_items=stats.items,
    )


def stats_from_pb(message: admin_pb2.GetBankStatsResponse) -> BankStats:
    """The SDK's reading of ``GetBankStatsResponse``. The wire does not carry the store's own
    row counts: ``stored`` is the indexed counts once ready (they agree then), else empty."""
    indexed = _counts_from_pb(message.indexed)
    return BankStats(
        ready=message.ready,
        indexed=indexed,
        stored=dict(indexed) if message.ready else {},
        cases={
            str(CaseState.ACTIVE): message.active_cases,
            str(CaseState.WITHDRAWN): message.withdrawn_cases,
        },
        items=message.active_items,
        load_seconds=message.index_load_seconds or None,
    )


# -- errors <-> status codes: the one table

ERROR_DOMAIN = "matcher.v1"
"""The ``google.rpc.ErrorInfo`` domain of our errors (its ``reason`` names the class)."""

ERROR_CODES: list[tuple[type[MatcherError], grpc.StatusCode]] = [
    # Most specific first: the service takes the first class an exception is an instance of;
    # the SDK takes the class named by ErrorInfo.reason, else the last class with the code.
    (InvalidHash, grpc.StatusCode.INVALID_ARGUMENT),
    (LowQuality, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidDistance, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Allowlisted, grpc.StatusCode.FAILED_PRECONDITION),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]
"""Error classes and their gRPC status codes. Anything else is ``INTERNAL``."""

_CLASS_OF_REASON = {cls.__name__: cls for cls, _ in ERROR_CODES}
_CLASS_OF_CODE: dict[grpc.StatusCode, type[MatcherError]] = {code: cls for cls, code in ERROR_CODES}
# Codes the server never sends but a channel may produce (a deadline expiring on the way).
_CLASS_OF_CODE[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable
_CLASS_OF_CODE[grpc.StatusCode.ALREADY_EXISTS] = Conflict


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception (``INTERNAL`` for anything not ours)."""
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _class_of(exc: MatcherError) -> type[MatcherError]:
    for cls, _ in ERROR_CODES:
        if isinstance(exc, cls):
            return cls
    return MatcherError


def status_of(exc: BaseException) -> status_pb2.Status:
    """The rich status for an exception: code, message, and details (``ErrorInfo`` naming the
    class, ``BadRequest`` with the field violation, ``RetryInfo``). Anything unexpected is
    ``INTERNAL`` with a fixed message: its text could hold anything, and goes to the log only."""
    code = code_of(exc)
    if code is grpc.StatusCode.INTERNAL or not isinstance(exc, MatcherError):
        return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=_class_of(exc).__name__, domain=ERROR_DOMAIN)
    )
    if isinstance(exc, InvalidInput | Allowlisted):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.reason
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    elif isinstance(exc, RateLimited):
        delay = Duration()
        delay.FromMilliseconds(max(1, round(exc.retry_after * 1000)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def error_of(code: grpc.StatusCode, message: str, details: Iterable[Any] = ()) -> MatcherError:
    """Our exception for a failed call's status code, message and details (``Any`` messages):
    the class the server raised, with its field (``InvalidInput``) or ``retry_after``
    (``RateLimited``). Codes of no class of ours give a ``MatcherError`` naming the code."""
    cls: type[MatcherError] | None = _CLASS_OF_CODE.get(code)
    field, retry_after = "", 1.0
    for any_ in details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if any_.Is(info.DESCRIPTOR) and any_.Unpack(info):
            named = _CLASS_OF_REASON.get(info.reason)
            # Trust the reason only where it agrees with the code (a subclass of its class).
            if info.domain == ERROR_DOMAIN and named and (cls is None or issubclass(named, cls)):
                cls = named
        elif any_.Is(bad.DESCRIPTOR) and any_.Unpack(bad) and bad.field_violations:
            field = bad.field_violations[0].field
        elif any_.Is(retry.DESCRIPTOR) and any_.Unpack(retry):
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
    if cls is None:
        return MatcherError(f"{code.name}: {message or code.name}")
    if issubclass(cls, InvalidInput | Allowlisted):
        return cls(message, field=field)
    if issubclass(cls, RateLimited):
        return RateLimited(message, retry_after=retry_after)
    return cls(message or code.name)
