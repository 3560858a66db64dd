"""The Python SDK: sync and async clients for the matcher.v1 service.

Results are typed dataclasses; failures are the project's own exceptions (``matcher.errors``),
never a raw ``grpc.RpcError``: ``InvalidInput`` carries the server's field violation in
``field``, ``RateLimited`` its ``retry_after``.

>>> from matcher.client import Client, Query
>>> with Client("127.0.0.1:50051", api_key="mk_...") as client:  # doctest: +SKIP
...     [result] = client.match([Query([pdq_hash])])
...     result.matches
[MatchResult(match_id='m_...', signal='pdq', distance=4)]

Both clients build requests and read replies with the same ``_Call`` objects; they differ only
in how a call is made (blocking or awaited). This module does not import the bank or the
hashing code, so it stays light for pipelines that only query.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from matcher.errors import (
    Conflict,
    InvalidInput,
    MatcherError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from matcher.signals import SIGNALS, Hash
from matcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cases_pb2,
    cases_pb2_grpc,
    hashes_pb2,
    match_pb2,
    match_pb2_grpc,
)

__all__ = [
    "DEFAULT_TARGET",
    "ApiKeyInfo",
    "AsyncClient",
    "CaseInfo",
    "Client",
    "EnrollResult",
    "MatchResult",
    "NewApiKey",
    "NewCase",
    "Query",
    "QueryResult",
]

DEFAULT_TARGET = "127.0.0.1:50051"
R = TypeVar("R")

_SIGNAL_NAME = {hashes_pb2.SignalType.Value(f"SIGNAL_TYPE_{n.upper()}"): n for n in SIGNALS}
_ROLE_NAME = {
    admin_pb2.Role.Value(f"ROLE_{n.upper()}"): n for n in ("partner", "practitioner", "admin")
}
_STATE_NAME = {
    cases_pb2.CaseState.Value(f"CASE_STATE_{n.upper()}"): n for n in ("active", "withdrawn")
}


# -- typed results


@dataclass(frozen=True, slots=True)
class Query:
    """One image to look up: its hashes, an optional stricter distance, and your own label."""

    hashes: Sequence[Hash]
    max_distance: int | None = None
    query_id: str = ""


@dataclass(frozen=True, slots=True)
class MatchResult:
    """A stored entry that matched: an opaque id (for feedback), the signal, the distance."""

    match_id: str
    signal: str
    distance: int


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer to one query: its label and its matches, best first (empty: no match)."""

    query_id: str
    matches: list[MatchResult]


@dataclass(frozen=True, slots=True)
class CaseInfo:
    """A case's state and counts."""

    number: str
    state: str
    hash_count: int
    hash_counts: dict[str, int]
    match_count: int
    reported_correct: int
    reported_wrong: int
    created_at: datetime | None
    withdrawn_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewCase:
    """A new case and its withdrawal secret (shown once: give it to the victim)."""

    case: CaseInfo
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What an enrollment stored: hashes added, duplicates skipped, the case's new total."""

    added: int
    duplicates: int
    hash_count: int


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key's record (never its key material)."""

    id: int
    name: str
    role: str
    organization: int | None
    prefix: str
    created_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A new API key: send ``key`` as ``authorization: Bearer <key>``. Shown once."""

    info: ApiKeyInfo
    key: str = field(repr=False)


# -- conversions


def _time(message: Any, name: str) -> datetime | None:
    return message.__getattribute__(name).ToDatetime() if message.HasField(name) else None


def _hash_pb(h: Hash) -> hashes_pb2.Hash:
    signal = hashes_pb2.SignalType.Value(f"SIGNAL_TYPE_{h.signal.name.upper()}")
    message = hashes_pb2.Hash(signal_type=signal, value=h.value)
    if h.quality is not None:
        message.quality = h.quality
    return message


def _query_pb(query: Query | Sequence[Hash]) -> match_pb2.Query:
    if not isinstance(query, Query):
        query = Query(list(query))
    message = match_pb2.Query(hashes=[_hash_pb(h) for h in query.hashes], query_id=query.query_id)
    if query.max_distance is not None:
        message.max_distance = query.max_distance
    return message


def _results(results: Iterable[match_pb2.QueryResult]) -> list[QueryResult]:
    return [
        QueryResult(
            r.query_id,
            [MatchResult(m.match_id, _SIGNAL_NAME[m.signal_type], m.distance) for m in r.matches],
        )
        for r in results
    ]


def _case(message: cases_pb2.Case) -> CaseInfo:
    return CaseInfo(
        number=message.case_number,
        state=_STATE_NAME.get(message.state, "unspecified"),
        hash_count=message.hash_count,
        hash_counts={_SIGNAL_NAME[c.signal_type]: c.count for c in message.hash_counts},
        match_count=message.match_count,
        reported_correct=message.reported_correct,
        reported_wrong=message.reported_wrong,
        created_at=_time(message, "create_time"),
        withdrawn_at=_time(message, "withdraw_time"),
    )


def _org_name(org: int | None) -> str:
    return f"organizations/{org}" if org is not None else ""


def _api_key(message: admin_pb2.ApiKey) -> ApiKeyInfo:
    org = message.organization.removeprefix("organizations/")
    return ApiKeyInfo(
        id=int(message.name.removeprefix("apiKeys/")),
        name=message.display_name,
        role=_ROLE_NAME.get(message.role, "unspecified"),
        organization=int(org) if org else None,
        prefix=message.key_prefix,
        created_at=_time(message, "create_time"),
        revoked_at=_time(message, "revoke_time"),
    )


def _case_name(case: str) -> str:
    return case if case.startswith("cases/") else f"cases/{case}"


_ERRORS: dict[grpc.StatusCode, type[MatcherError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def _error(exc: grpc.RpcError) -> MatcherError:
    """Our exception for a failed call, with the server's details."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    text = (exc.details() if isinstance(exc, grpc.Call) else None) or str(code)
    status = rpc_status.from_call(exc) if isinstance(exc, grpc.Call) else None
    details = list(status.details) if status is not None else []
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        where = ""
        for any_ in details:
            bad = error_details_pb2.BadRequest()
            if any_.Unpack(bad) and bad.field_violations:
                where = bad.field_violations[0].field
        return InvalidInput(text, field=where)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = 1.0
        for any_ in details:
            info = error_details_pb2.RetryInfo()
            if any_.Unpack(info):
                retry = info.retry_delay.ToMilliseconds() / 1000
        return RateLimited(text, retry_after=retry)
    cls = _ERRORS.get(code, MatcherError)
    return cls(f"{code.name}: {text}" if cls is MatcherError else text)


@dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    """One RPC: which stub and method, the request, and how to read the reply."""

    stub: str
    method: str
    request: Any
    parse: Callable[[Any], R]


class _Calls:
    """Request builders shared by both clients."""

    @staticmethod
    def match(queries: Iterable[Query | Sequence[Hash]]) -> _Call[list[QueryResult]]:
        request = match_pb2.MatchRequest(queries=[_query_pb(q) for q in queries])
        return _Call("match", "Match", request, lambda r: _results(r.results))

    @staticmethod
    def report(match_id: str, correct: bool) -> _Call[None]:
        verdict = match_pb2.VERDICT_CORRECT if correct else match_pb2.VERDICT_WRONG
        request = match_pb2.ReportMatchRequest(match_id=match_id, verdict=verdict)
        return _Call("match", "ReportMatch", request, lambda r: None)

    @staticmethod
    def create_case(organization: int | None) -> _Call[NewCase]:
        request = cases_pb2.CreateCaseRequest(organization=_org_name(organization))
        return _Call(
            "cases", "CreateCase", request, lambda r: NewCase(_case(r.case), r.withdrawal_secret)
        )

    @staticmethod
    def add_hashes(case: str, hashes: Iterable[Hash]) -> _Call[EnrollResult]:
        request = cases_pb2.AddHashesRequest(
            name=_case_name(case), hashes=[_hash_pb(h) for h in hashes]
        )
        return _Call(
            "cases",
            "AddHashes",
            request,
            lambda r: EnrollResult(r.added, r.duplicates, r.hash_count),
        )

    @staticmethod
    def get_case(case: str) -> _Call[CaseInfo]:
        request = cases_pb2.GetCaseRequest(name=_case_name(case))
        return _Call("cases", "GetCase", request, lambda r: _case(r.case))

    @staticmethod
    def withdraw(case: str) -> _Call[CaseInfo]:
        request = cases_pb2.WithdrawCaseRequest(name=_case_name(case))
        return _Call("cases", "WithdrawCase", request, lambda r: _case(r.case))

    @staticmethod
    def withdraw_with_secret(case_number: str, secret: str) -> _Call[str]:
        request = cases_pb2.WithdrawCaseWithSecretRequest(case_number=case_number, secret=secret)
        return _Call(
            "cases",
            "WithdrawCaseWithSecret",
            request,
            lambda r: _STATE_NAME.get(r.state, "unspecified"),
        )

    @staticmethod
    def create_api_key(name: str, role: str, organization: int | None) -> _Call[NewApiKey]:
        request = admin_pb2.CreateApiKeyRequest(
            display_name=name,
            role=admin_pb2.Role.Value(f"ROLE_{role.upper()}"),
            organization=_org_name(organization),
        )
        return _Call(
            "admin", "CreateApiKey", request, lambda r: NewApiKey(_api_key(r.api_key), r.key)
        )

    @staticmethod
    def list_api_keys(page_token: str = "") -> _Call[tuple[list[ApiKeyInfo], str]]:
        request = admin_pb2.ListApiKeysRequest(page_size=1000, page_token=page_token)
        return _Call(
            "admin",
            "ListApiKeys",
            request,
            lambda r: ([_api_key(k) for k in r.api_keys], r.next_page_token),
        )

    @staticmethod
    def revoke_api_key(key_id: int) -> _Call[ApiKeyInfo]:
        request = admin_pb2.RevokeApiKeyRequest(name=f"apiKeys/{key_id}")
        return _Call("admin", "RevokeApiKey", request, lambda r: _api_key(r.api_key))

    @staticmethod
    def create_organization(name: str) -> _Call[int]:
        request = admin_pb2.CreateOrganizationRequest(display_name=name)
        return _Call(
            "admin",
            "CreateOrganization",
            request,
            lambda r: int(r.organization.name.removeprefix("organizations/")),
        )

    @staticmethod
    def stats() -> _Call[dict[str, Any]]:
        def parse(r: admin_pb2.GetBankStatsResponse) -> dict[str, Any]:
            return {
                "ready": r.ready,
                "indexed": {_SIGNAL_NAME[c.signal_type]: c.count for c in r.indexed},
                "active_cases": r.active_cases,
                "withdrawn_cases": r.withdrawn_cases,
                "index_load_seconds": r.index_load_seconds,
            }

        return _Call("admin", "GetBankStats", admin_pb2.GetBankStatsRequest(), parse)


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def _credentials(
    root_certificates: bytes | None, private_key: bytes | None, certificate_chain: bytes | None
) -> grpc.ChannelCredentials | None:
    if root_certificates is None and certificate_chain is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


class Client:
    """A blocking client. Thread-safe; reuse one per process (it holds one HTTP/2 connection).

    ``timeout`` (seconds) is the deadline of every call; the server refuses matches without
    one. TLS: pass ``root_certificates`` (PEM bytes of the server's CA), and for mutual TLS
    ``private_key`` and ``certificate_chain``.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        creds = _credentials(root_certificates, private_key, certificate_chain)
        self._channel = (
            grpc.secure_channel(target, creds, options=_CHANNEL_OPTIONS)
            if creds
            else grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        )
        self._stubs = {
            "match": match_pb2_grpc.MatchServiceStub(self._channel),
            "cases": cases_pb2_grpc.CaseServiceStub(self._channel),
            "admin": admin_pb2_grpc.AdminServiceStub(self._channel),
        }
        self._metadata = _metadata(api_key)
        self.timeout = timeout

    def _invoke(self, call: _Call[R]) -> R:
        method = getattr(self._stubs[call.stub], call.method)
        try:
            reply = method(call.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return call.parse(reply)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def healthy(self, service: str = "") -> bool:
        """True when the server reports SERVING (its index is loaded)."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def match(self, queries: Iterable[Query | Sequence[Hash]]) -> list[QueryResult]:
        """Look up images (each a ``Query`` or a list of its hashes); one result per query."""
        return self._invoke(_Calls.match(queries))

    def stream_match(
        self, batches: Iterable[Iterable[Query | Sequence[Hash]]]
    ) -> Iterator[list[QueryResult]]:
        """Stream batches of queries; yields one list of results per batch, in order.

        The stream has no deadline (a scan may run for hours); ``timeout`` does not apply.
        """
        requests = (
            match_pb2.StreamMatchRequest(queries=[_query_pb(q) for q in batch]) for batch in batches
        )
        try:
            for reply in self._stubs["match"].StreamMatch(requests, metadata=self._metadata):
                yield _results(reply.results)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def report(self, match_id: str, correct: bool) -> None:
        """Say whether a match was right (a re-upload) or wrong (a false match)."""
        self._invoke(_Calls.report(match_id, correct))

    def create_case(self, organization: int | None = None) -> NewCase:
        """Open a case (practitioners: for their organisation; admins name one)."""
        return self._invoke(_Calls.create_case(organization))

    def add_hashes(self, case: str, hashes: Iterable[Hash]) -> EnrollResult:
        """Enroll hashes into a case: all or none; PDQ hashes need their quality."""
        return self._invoke(_Calls.add_hashes(case, hashes))

    def get_case(self, case: str) -> CaseInfo:
        return self._invoke(_Calls.get_case(case))

    def withdraw(self, case: str) -> CaseInfo:
        """Withdraw a case (practitioner): its hashes are deleted, matching stops now."""
        return self._invoke(_Calls.withdraw(case))

    def withdraw_with_secret(self, case_number: str, secret: str) -> str:
        """Withdraw a case as its victim (no API key needed); returns its state."""
        return self._invoke(_Calls.withdraw_with_secret(case_number, secret))

    def create_api_key(self, name: str, role: str, organization: int | None = None) -> NewApiKey:
        return self._invoke(_Calls.create_api_key(name, role, organization))

    def list_api_keys(self) -> list[ApiKeyInfo]:
        keys, token = self._invoke(_Calls.list_api_keys())
        while token:
            more, token = self._invoke(_Calls.list_api_keys(token))
            keys += more
        return keys

    def revoke_api_key(self, key_id: int) -> ApiKeyInfo:
        return self._invoke(_Calls.revoke_api_key(key_id))

    def create_organization(self, name: str) -> int:
        """Create an organisation; returns its id."""
        return self._invoke(_Calls.create_organization(name))

    def stats(self) -> dict[str, Any]:
        """Index sizes and case counts (admin)."""
        return self._invoke(_Calls.stats())


class AsyncClient:
    """The asyncio client: the same methods as ``Client``, awaited. Use within one event loop."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        creds = _credentials(root_certificates, private_key, certificate_chain)
        self._channel = (
            grpc.aio.secure_channel(target, creds, options=_CHANNEL_OPTIONS)
            if creds
            else grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        )
        self._stubs = {
            "match": match_pb2_grpc.MatchServiceStub(self._channel),
            "cases": cases_pb2_grpc.CaseServiceStub(self._channel),
            "admin": admin_pb2_grpc.AdminServiceStub(self._channel),
        }
        self._metadata = _metadata(api_key)
        self.timeout = timeout

    async def _invoke(self, call: _Call[R]) -> R:
        method = getattr(self._stubs[call.stub], call.method)
        try:
            reply = await method(call.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return call.parse(reply)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def healthy(self, service: str = "") -> bool:
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def match(self, queries: Iterable[Query | Sequence[Hash]]) -> list[QueryResult]:
        return await self._invoke(_Calls.match(queries))

    async def stream_match(
        self, batches: AsyncIterable[Iterable[Query | Sequence[Hash]]]
    ) -> AsyncIterator[list[QueryResult]]:
        async def requests() -> AsyncIterator[match_pb2.StreamMatchRequest]:
            async for batch in batches:
                yield match_pb2.StreamMatchRequest(queries=[_query_pb(q) for q in batch])

        try:
            async for reply in self._stubs["match"].StreamMatch(
                requests(), metadata=self._metadata
            ):
                yield _results(reply.results)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def report(self, match_id: str, correct: bool) -> None:
        await self._invoke(_Calls.report(match_id, correct))

    async def create_case(self, organization: int | None = None) -> NewCase:
        return await self._invoke(_Calls.create_case(organization))

    async def add_hashes(self, case: str, hashes: Iterable[Hash]) -> EnrollResult:
        return await self._invoke(_Calls.add_hashes(case, hashes))

    async def get_case(self, case: str) -> CaseInfo:
        return await self._invoke(_Calls.get_case(case))

    async def withdraw(self, case: str) -> CaseInfo:
        return await self._invoke(_Calls.withdraw(case))

    async def withdraw_with_secret(self, case_number: str, secret: str) -> str:
        return await self._invoke(_Calls.withdraw_with_secret(case_number, secret))

    async def create_api_key(
        self, name: str, role: str, organization: int | None = None
    ) -> NewApiKey:
        return await self._invoke(_Calls.create_api_key(name, role, organization))

    async def revoke_api_key(self, key_id: int) -> ApiKeyInfo:
        return await self._invoke(_Calls.revoke_api_key(key_id))

    async def create_organization(self, name: str) -> int:
        return await self._invoke(_Calls.create_organization(name))

    async def stats(self) -> dict[str, Any]:
        return await self._invoke(_Calls.stats())


def as_dict(result: Any) -> dict[str, Any]:
    """A JSON-friendly dict of any result above (datetimes as ISO text)."""
    out = dataclasses.asdict(result)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out
