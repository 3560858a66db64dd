"""Protobuf <-> domain conversions: the one boundary between the wire and the bank.

Validation of what comes in happens here, once: every malformed value raises an
``InvalidInput`` naming its field (``queries[3].hashes[0].value``), which the status module turns
into a ``google.rpc.BadRequest`` field violation. Messages never repeat a hash value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from matcher.bank import CaseStatus, EnrollResult, Match, Query
from matcher.errors import InvalidInput
from matcher.principal import Role
from matcher.signals import SIGNALS, Hash, SignalType
from matcher.store import ApiKeyRecord, CaseState, Organisation
from matcher.v1 import admin_pb2, cases_pb2, hashes_pb2, match_pb2

__all__ = [
    "api_key_to_pb",
    "case_name",
    "case_to_pb",
    "enroll_result_to_pb",
    "hash_from_pb",
    "hash_to_pb",
    "hashes_from_pb",
    "id_from_name",
    "organization_to_pb",
    "queries_from_pb",
    "query_to_pb",
    "results_to_pb",
    "role_from_pb",
    "role_to_pb",
    "signal_from_pb",
    "signal_to_pb",
    "timestamp",
]

# Enum numbers by signal name, read from the contract so the two cannot drift apart.
_SIGNAL_TO_PB: dict[str, int] = {
    name: hashes_pb2.SignalType.Value(f"SIGNAL_TYPE_{name.upper()}") for name in SIGNALS
}
_SIGNAL_FROM_PB: dict[int, SignalType] = {v: SIGNALS[k] for k, v in _SIGNAL_TO_PB.items()}
_ROLE_TO_PB = {role: admin_pb2.Role.Value(f"ROLE_{role.name}") for role in Role}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}
_STATE_TO_PB = {state: cases_pb2.CaseState.Value(f"CASE_STATE_{state.name}") for state in CaseState}


def signal_from_pb(value: int, *, field: str) -> SignalType:
    """The signal type of an enum number, or ``InvalidInput`` (unspecified or unknown)."""
    try:
        return _SIGNAL_FROM_PB[value]
    except KeyError:
        raise InvalidInput("signal_type must be set to a known signal type", field=field) from None


def signal_to_pb(signal: SignalType) -> int:
    return _SIGNAL_TO_PB[signal.name]


def hash_from_pb(message: hashes_pb2.Hash, *, field: str) -> Hash:
    """A validated ``Hash`` from its wire form (length checked; quality kept if sent)."""
    signal = signal_from_pb(message.signal_type, field=f"{field}.signal_type")
    if len(message.value) != signal.byte_length:
        raise InvalidInput(
            f"{signal.name} hash must be {signal.byte_length} bytes, got {len(message.value)}",
            field=f"{field}.value",
        )
    quality = message.quality if message.HasField("quality") else None
    if quality is not None and not 0 <= quality <= 100:
        raise InvalidInput(f"quality must be 0-100, got {quality}", field=f"{field}.quality")
    return Hash(signal, message.value, quality)


def hash_to_pb(h: Hash) -> hashes_pb2.Hash:
    message = hashes_pb2.Hash(signal_type=signal_to_pb(h.signal), value=h.value)
    if h.quality is not None:
        message.quality = h.quality
    return message


def hashes_from_pb(messages: Sequence[hashes_pb2.Hash], *, field: str = "hashes") -> list[Hash]:
    return [hash_from_pb(m, field=f"{field}[{i}]") for i, m in enumerate(messages)]


def queries_from_pb(
    messages: Sequence[match_pb2.Query], *, max_batch: int, field: str = "queries"
) -> list[Query]:
    """Validated domain queries; ``InvalidInput`` for an empty or oversized batch or a bad hash."""
    if not messages:
        raise InvalidInput("at least one query is required", field=field)
    if len(messages) > max_batch:
        raise InvalidInput(
            f"at most {max_batch} queries per request, got {len(messages)}", field=field
        )
    queries = []
    for i, q in enumerate(messages):
        where = f"{field}[{i}]"
        if not q.hashes:
            raise InvalidInput("a query needs at least one hash", field=f"{where}.hashes")
        hashes = hashes_from_pb(q.hashes, field=f"{where}.hashes")
        distance = q.max_distance if q.HasField("max_distance") else None
        if distance is not None:
            for h in hashes:
                h.signal.check_distance(distance, field=f"{where}.max_distance")
        queries.append(Query(hashes, distance))
    return queries


def query_to_pb(query: Query, query_id: str = "") -> match_pb2.Query:
    message = match_pb2.Query(hashes=[hash_to_pb(h) for h in query.hashes], query_id=query_id)
    if query.max_distance is not None:
        message.max_distance = query.max_distance
    return message


def results_to_pb(
    requests: Sequence[match_pb2.Query], results: Sequence[Sequence[Match]]
) -> list[match_pb2.QueryResult]:
    return [
        match_pb2.QueryResult(
            query_id=request.query_id,
            matches=[
                match_pb2.MatchResult(
                    match_id=m.match_id, signal_type=signal_to_pb(m.signal), distance=m.distance
                )
                for m in matches
            ],
        )
        for request, matches in zip(requests, results, strict=True)
    ]


def timestamp(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def case_name(number: str) -> str:
    return f"cases/{number}"


def case_number_from_name(name: str, *, field: str = "name") -> str:
    """The case number in ``cases/{number}`` (a bare number is accepted too)."""
    number = name.removeprefix("cases/").strip()
    if not number:
        raise InvalidInput("a case name like cases/{case_number} is required", field=field)
    return number


def id_from_name(name: str, collection: str, *, field: str) -> int:
    """The integer id in ``{collection}/{id}``, or ``InvalidInput``."""
    prefix, _, tail = name.partition("/")
    if prefix != collection or not tail.isdigit():
        raise InvalidInput(f"expected a name like {collection}/123", field=field)
    return int(tail)


def case_to_pb(status: CaseStatus) -> cases_pb2.Case:
    return cases_pb2.Case(
        name=case_name(status.number),
        case_number=status.number,
        state=_STATE_TO_PB[status.state],
        hash_count=status.hash_count,
        hash_counts=[
            hashes_pb2.SignalCount(signal_type=_SIGNAL_TO_PB[name], count=count)
            for name, count in sorted(status.hashes_by_signal.items())
        ],
        match_count=status.match_count,
        reported_correct=status.reported_correct,
        reported_wrong=status.reported_wrong,
        create_time=timestamp(status.created_at),
        withdraw_time=timestamp(status.withdrawn_at),
    )


def state_to_pb(state: CaseState) -> int:
    return _STATE_TO_PB[state]


def enroll_result_to_pb(result: EnrollResult) -> cases_pb2.AddHashesResponse:
    return cases_pb2.AddHashesResponse(
        added=result.added, duplicates=result.duplicates, hash_count=result.hash_count
    )


def role_from_pb(value: int, *, field: str = "role") -> Role:
    try:
        return _ROLE_FROM_PB[value]
    except KeyError:
        raise InvalidInput("role must be partner, practitioner or admin", field=field) from None


def role_to_pb(role: Role) -> int:
    return _ROLE_TO_PB[role]


def organization_to_pb(org: Organisation) -> admin_pb2.Organization:
    return admin_pb2.Organization(
        name=f"organizations/{org.id}", display_name=org.name, create_time=timestamp(org.created_at)
    )


def api_key_to_pb(record: ApiKeyRecord) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        name=f"apiKeys/{record.id}",
        display_name=record.name,
        role=role_to_pb(record.role),
        organization=f"organizations/{record.org_id}" if record.org_id is not None else "",
        key_prefix=record.prefix,
        create_time=timestamp(record.created_at),
        revoke_time=timestamp(record.revoked_at),
    )
