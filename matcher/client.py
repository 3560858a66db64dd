"""The Python SDK: sync and async clients for the matcher.v1 service.

Both clients have the same methods, returning the domain's own values (``matcher.records``:
``QueryResult``, ``ItemMatch``, ``CaseStatus``, ``ItemStatus``, ``EnrollResult`` ...), the same
ones the bank returns inside the service. Failures are the project's own exceptions
(``matcher.errors``), never a raw ``grpc.RpcError``: the class the server raised, with its field
(``InvalidInput.field``, e.g. ``items[2].hashes[5].quality``) or ``RateLimited.retry_after``.

>>> from matcher.client import Client, Query
>>> with Client("127.0.0.1:50051", api_key="mk_...") as client:  # doctest: +SKIP
...     [result] = client.match([Query(upload_hashes, query_id="upload-1")])
...     result.matches
[ItemMatch(item_id='m_...', signal=..., distance=4, hits=3)]

Requests are built and replies read by ``matcher.contract``, the module the server uses too;
the clients differ only in how a call is made (blocking or awaited). This module imports
neither the bank nor the hashing code, so it stays light for pipelines that only query.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from matcher import contract
from matcher.errors import Allowlisted, InvalidInput, MatcherError
from matcher.principal import Role
from matcher.records import (
    AllowlistAdded,
    AllowlistEntry,
    ApiKeyRecord,
    BankStats,
    CaseStatus,
    EnrollResult,
    ItemMatch,
    ItemStatus,
    KeyPolicy,
    NewApiKey,
    NewCase,
    NewItem,
    Organisation,
    Query,
    QueryResult,
    ReportReason,
    ReviewDecision,
    ReviewEntry,
)
from matcher.signals import SIGNALS, Hash, SignalType
from matcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cases_pb2,
    cases_pb2_grpc,
    match_pb2,
    match_pb2_grpc,
)

__all__ = [
    "DEFAULT_TARGET",
    "MAX_ITEMS_PER_CALL",
    "AllowlistAdded",
    "AllowlistEntry",
    "ApiKeyRecord",
    "AsyncClient",
    "BankStats",
    "CaseStatus",
    "Client",
    "EnrollResult",
    "ItemMatch",
    "ItemStatus",
    "NewApiKey",
    "NewCase",
    "NewItem",
    "Organisation",
    "Query",
    "QueryResult",
    "as_dict",
]

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where ``matcher serve`` listens by default."""

MAX_ITEMS_PER_CALL = 1000
"""The most items ``enroll`` sends in one ``AddItems`` call (the server's default limit)."""

R = TypeVar("R")

QueryLike = Query | Sequence[Hash]
"""A ``Query``, or a plain sequence of one image's hashes (a query with default distances)."""

ItemLike = NewItem | Sequence[Hash]
"""A ``NewItem``, or a plain sequence of one image's hashes (an image item without label)."""


def _error(exc: grpc.RpcError) -> MatcherError:
    """Our exception for a failed call, read back through the contract's error table."""
    if not isinstance(exc, grpc.Call):
        return MatcherError(f"call failed: {type(exc).__name__}")
    status = rpc_status.from_call(exc)
    details = list(status.details) if status is not None else []
    return contract.error_of(exc.code(), exc.details() or "", details)


@dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    """One unary RPC: which stub and method, the request, and how to read the reply."""

    stub: str
    method: str
    request: Any
    parse: Callable[[Any], R]


def _shifted(exc: Allowlisted, offset: int) -> Allowlisted:
    # A refusal names the item within its call (``items[3]``); ``enroll`` cuts the caller's
    # items into calls, so name it within the caller's whole list.
    head, _, tail = exc.field.partition("[")
    index, _, rest = tail.partition("]")
    if head == "items" and index.isdigit() and offset:
        return Allowlisted(exc.reason, field=f"items[{int(index) + offset}]{rest}")
    return exc


def _enroll_batches(
    items: Sequence[NewItem], max_hashes: int, max_items: int = MAX_ITEMS_PER_CALL
) -> list[list[NewItem]]:
    """Items in order, cut into calls of at most ``max_items`` items and ``max_hashes`` hashes.

    An item is never split (its hashes are committed together); one larger than ``max_hashes``
    goes alone in its call.
    """
    if not items:
        raise InvalidInput("at least one item is required", field="items")
    batches: list[list[NewItem]] = []
    batch: list[NewItem] = []
    hashes = 0
    for item in items:
        n = len(item.hashes)
        if batch and (len(batch) >= max_items or hashes + n > max_hashes):
            batches.append(batch)
            batch, hashes = [], 0
        batch.append(item)
        hashes += n
    if batch:
        batches.append(batch)
    return batches


def _sum_results(case: str, results: Sequence[EnrollResult]) -> EnrollResult:
    """One result for several calls: their items in order, summed counts, the last totals."""
    last = results[-1]
    return EnrollResult(
        case_number=last.case_number or case,
        items=[item for r in results for item in r.items],
        added=sum(r.added for r in results),
        existing=sum(r.existing for r in results),
        item_count=last.item_count,
        hash_count=last.hash_count,
    )


def _items(items: Iterable[ItemLike]) -> list[NewItem]:
    return contract.as_items(items)


class _Calls:
    """The request of every unary RPC and the reading of its reply, shared by both clients."""

    @staticmethod
    def match(queries: Iterable[QueryLike]) -> _Call[list[QueryResult]]:
        request = match_pb2.MatchRequest(queries=contract.queries_to_pb(queries))
        return _Call("match", "Match", request, lambda r: contract.results_from_pb(r.results))

    @staticmethod
    def report(item_id: str, correct: bool, reason: ReportReason | str | None) -> _Call[None]:
        request = match_pb2.ReportMatchRequest(
            item_id=item_id,
            verdict=contract.verdict_to_pb(correct),
            reason=contract.reason_to_pb(reason),
        )
        return _Call("match", "ReportMatch", request, lambda r: None)

    @staticmethod
    def review_queue(
        organization: int | None, page_token: str = ""
    ) -> _Call[tuple[list[ReviewEntry], str]]:
        request = cases_pb2.ListReviewQueueRequest(
            page_size=1000,
            page_token=page_token,
            organization=contract.organization_name(organization),
        )
        return _Call(
            "cases",
            "ListReviewQueue",
            request,
            lambda r: ([contract.review_entry_from_pb(e) for e in r.entries], r.next_page_token),
        )

    @staticmethod
    def review_item(
        case: str, number: int, decision: ReviewDecision | str, note: str
    ) -> _Call[ItemStatus]:
        number_ = contract.case_number_from_name(case, field="case")
        request = cases_pb2.ReviewItemRequest(
            name=contract.item_name(number_, number),
            decision=contract.review_decision_to_pb(decision),
            note=note,
        )
        return _Call("cases", "ReviewItem", request, lambda r: contract.item_from_pb(r.item))

    @staticmethod
    def create_case(organization: int | None) -> _Call[NewCase]:
        request = cases_pb2.CreateCaseRequest(organization=contract.organization_name(organization))
        return _Call("cases", "CreateCase", request, contract.new_case_from_pb)

    @staticmethod
    def add_items(case: str, items: Sequence[NewItem]) -> _Call[EnrollResult]:
        number = contract.case_number_from_name(case, field="case")
        request = cases_pb2.AddItemsRequest(
            name=contract.case_name(number), items=contract.items_to_pb(items)
        )
        return _Call(
            "cases", "AddItems", request, lambda r: contract.enroll_result_from_pb(number, r)
        )

    @staticmethod
    def get_case(case: str) -> _Call[CaseStatus]:
        name = contract.case_name(contract.case_number_from_name(case, field="case"))
        request = cases_pb2.GetCaseRequest(name=name)
        return _Call("cases", "GetCase", request, lambda r: contract.case_from_pb(r.case))

    @staticmethod
    def get_case_with_secret(case_number: str, secret: str) -> _Call[CaseStatus]:
        request = cases_pb2.GetCaseWithSecretRequest(case_number=case_number, secret=secret)
        return _Call("cases", "GetCaseWithSecret", request, lambda r: contract.case_from_pb(r.case))

    @staticmethod
    def withdraw(case: str) -> _Call[CaseStatus]:
        name = contract.case_name(contract.case_number_from_name(case, field="case"))
        request = cases_pb2.WithdrawCaseRequest(name=name)
        return _Call("cases", "WithdrawCase", request, lambda r: contract.case_from_pb(r.case))

    @staticmethod
    def withdraw_item(case: str, number: int) -> _Call[ItemStatus]:
        number_ = contract.case_number_from_name(case, field="case")
        request = cases_pb2.WithdrawItemRequest(name=contract.item_name(number_, number))
        return _Call("cases", "WithdrawItem", request, lambda r: contract.item_from_pb(r.item))

    @staticmethod
    def withdraw_with_secret(case_number: str, secret: str) -> _Call[CaseStatus]:
        request = cases_pb2.WithdrawCaseWithSecretRequest(case_number=case_number, secret=secret)
        return _Call(
            "cases", "WithdrawCaseWithSecret", request, lambda r: contract.case_from_pb(r.case)
        )

    @staticmethod
    def withdraw_item_with_secret(
        case_number: str, secret: str, item_number: int
    ) -> _Call[ItemStatus]:
        request = cases_pb2.WithdrawItemWithSecretRequest(
            case_number=case_number, secret=secret, item_number=item_number
        )
        return _Call(
            "cases", "WithdrawItemWithSecret", request, lambda r: contract.item_from_pb(r.item)
        )

    @staticmethod
    def create_api_key(name: str, role: Role | str, organization: int | None) -> _Call[NewApiKey]:
        request = admin_pb2.CreateApiKeyRequest(
            display_name=name,
            role=contract.role_to_pb(role),
            organization=contract.organization_name(organization),
        )
        return _Call("admin", "CreateApiKey", request, contract.new_api_key_from_pb)

    @staticmethod
    def list_api_keys(page_token: str = "") -> _Call[tuple[list[ApiKeyRecord], str]]:
        request = admin_pb2.ListApiKeysRequest(page_size=1000, page_token=page_token)
        return _Call(
            "admin",
            "ListApiKeys",
            request,
            lambda r: ([contract.api_key_from_pb(k) for k in r.api_keys], r.next_page_token),
        )

    @staticmethod
    def revoke_api_key(key_id: int) -> _Call[ApiKeyRecord]:
        request = admin_pb2.RevokeApiKeyRequest(name=contract.api_key_name(key_id))
        return _Call(
            "admin", "RevokeApiKey", request, lambda r: contract.api_key_from_pb(r.api_key)
        )

    @staticmethod
    def update_key_policy(
        key_id: int,
        exact_distances: bool | None,
        max_distance: dict[str, int] | None,
        daily_hashes: int | None,
        named_in_reports: bool | None = None,
    ) -> _Call[KeyPolicy]:
        request = admin_pb2.UpdateApiKeyPolicyRequest(name=contract.api_key_name(key_id))
        if named_in_reports is not None:
            request.named_in_reports = named_in_reports
        if exact_distances is not None:
            request.exact_distances = exact_distances
        if max_distance is not None:
            request.set_max_distances = True
            for name, distance in max_distance.items():
                request.max_distances.add(
                    signal_type=contract.signal_to_pb(SIGNALS[name]), distance=distance
                )
        if daily_hashes is not None:
            request.daily_hash_budget = daily_hashes
        return _Call(
            "admin",
            "UpdateApiKeyPolicy",
            request,
            lambda r: contract.key_policy_from_pb(r.api_key.policy),
        )

    @staticmethod
    def restore_api_key(key_id: int) -> _Call[KeyPolicy]:
        request = admin_pb2.RestoreApiKeyRequest(name=contract.api_key_name(key_id))
        return _Call(
            "admin",
            "RestoreApiKey",
            request,
            lambda r: contract.key_policy_from_pb(r.api_key.policy),
        )

    @staticmethod
    def add_allowlist(hashes: Sequence[Hash], label: str) -> _Call[AllowlistAdded]:
        request = admin_pb2.AddAllowlistEntriesRequest(
            hashes=[contract.hash_to_pb(h) for h in hashes], label=label
        )
        return _Call(
            "admin",
            "AddAllowlistEntries",
            request,
            lambda r: AllowlistAdded(
                [contract.allowlist_entry_from_pb(e) for e in r.entries], r.existing_count
            ),
        )

    @staticmethod
    def list_allowlist(page_token: str = "") -> _Call[tuple[list[AllowlistEntry], str]]:
        request = admin_pb2.ListAllowlistRequest(page_size=1000, page_token=page_token)
        return _Call(
            "admin",
            "ListAllowlist",
            request,
            lambda r: (
                [contract.allowlist_entry_from_pb(e) for e in r.entries],
                r.next_page_token,
            ),
        )

    @staticmethod
    def remove_allowlist_entry(entry_id: int) -> _Call[AllowlistEntry]:
        request = admin_pb2.RemoveAllowlistEntryRequest(
            name=contract.allowlist_entry_name(entry_id)
        )
        return _Call(
            "admin",
            "RemoveAllowlistEntry",
            request,
            lambda r: contract.allowlist_entry_from_pb(r.entry),
        )

    @staticmethod
    def seed_allowlist() -> _Call[tuple[int, int]]:
        return _Call(
            "admin",
            "SeedAllowlist",
            admin_pb2.SeedAllowlistRequest(),
            lambda r: (int(r.added_count), int(r.existing_count)),
        )

    @staticmethod
    def create_organization(name: str) -> _Call[Organisation]:
        request = admin_pb2.CreateOrganizationRequest(display_name=name)
        return _Call(
            "admin",
            "CreateOrganization",
            request,
            lambda r: contract.organization_from_pb(r.organization),
        )

    @staticmethod
    def stats() -> _Call[BankStats]:
        return _Call(
            "admin", "GetBankStats", admin_pb2.GetBankStatsRequest(), contract.stats_from_pb
        )


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
    # With a target naming several replicas ("dns:///matcher-headless:50051"), spread the
    # calls over all of them (one address: the same as the default).
    ("grpc.lb_policy_name", "round_robin"),
]


class _ClientBase:
    """What both clients share: configuration, stubs, and the requests (``_Calls``).

    ``timeout`` (seconds) is the deadline of every unary call; the server refuses matches
    without one. TLS: pass ``root_certificates`` (PEM bytes of the server's CA), and for mutual
    TLS ``private_key`` and ``certificate_chain``.
    """

    _secure_channel: Callable[..., Any]
    _insecure_channel: Callable[..., Any]

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
        self.target = target
        self.timeout = timeout
        self._channel = (
            type(self)._secure_channel(target, creds, options=_CHANNEL_OPTIONS)
            if creds
            else type(self)._insecure_channel(target, options=_CHANNEL_OPTIONS)
        )
        self._stubs: dict[str, Any] = {
            "match": match_pb2_grpc.MatchServiceStub(self._channel),
            "cases": cases_pb2_grpc.CaseServiceStub(self._channel),
            "admin": admin_pb2_grpc.AdminServiceStub(self._channel),
        }
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = _metadata(api_key)

    def _method(self, call: _Call[Any]) -> Any:
        return getattr(self._stubs[call.stub], call.method)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r})"  # never the API key


class Client(_ClientBase):
    """A blocking client. Thread-safe; reuse one per process (it holds one HTTP/2 connection).

    >>> with Client("127.0.0.1:50051", "mk_...") as client:  # doctest: +SKIP
    ...     client.healthy()
    True
    """

    _secure_channel = staticmethod(grpc.secure_channel)
    _insecure_channel = staticmethod(grpc.insecure_channel)

    def _invoke(self, call: _Call[R]) -> R:
        try:
            reply = self._method(call)(call.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return call.parse(reply)

    def close(self) -> None:
        """Close the connection."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def healthy(self, service: str = "") -> bool:
        """True when the server reports SERVING (its kernels compiled and its index loaded)."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def match(self, queries: Iterable[QueryLike]) -> list[QueryResult]:
        """Look up images (each a ``Query`` or a list of its hashes); one result per query,
        each listing the matched items (one per item, best first)."""
        return self._invoke(_Calls.match(queries))

    def stream_match(self, batches: Iterable[Iterable[QueryLike]]) -> Iterator[list[QueryResult]]:
        """Stream batches of queries; yields one list of results per batch, in order.

        The stream has no deadline (a scan may run for hours); ``timeout`` does not apply.
        """
        requests = (
            match_pb2.StreamMatchRequest(queries=contract.queries_to_pb(batch)) for batch in batches
        )
        try:
            for reply in self._stubs["match"].StreamMatch(requests, metadata=self._metadata):
                yield contract.results_from_pb(reply.results)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def report(
        self, item_id: str, correct: bool, *, reason: ReportReason | str | None = None
    ) -> None:
        """Say whether a matched item was right (a re-upload) or wrong (a false match), with
        an optional reason code (``ReportReason`` or its name, e.g. ``"widely_shared"``). Your
        key's later verdict on the same item replaces this one; it counts once."""
        self._invoke(_Calls.report(item_id, correct, reason))

    def review_queue(self, organization: int | None = None) -> list[ReviewEntry]:
        """Quarantined items waiting for review, oldest first (practitioner: its own
        organisation's; admin: all, or ``organization``'s)."""
        entries, token = self._invoke(_Calls.review_queue(organization))
        while token:
            more, token = self._invoke(_Calls.review_queue(organization, token))
            entries += more
        return entries

    def review_item(
        self, case: str, number: int, decision: ReviewDecision | str, *, note: str = ""
    ) -> ItemStatus:
        """Decide on a quarantined item (practitioner): ``"restore"`` (it matches again) or
        ``"withdraw"`` (its hashes are deleted); ``note`` goes into the audit trail."""
        return self._invoke(_Calls.review_item(case, number, decision, note))

    def create_case(self, organization: int | None = None) -> NewCase:
        """Open a case (practitioners: for their organisation; admins name one). The result's
        ``secret`` is shown once: give it to the victim."""
        return self._invoke(_Calls.create_case(organization))

    def add_items(self, case: str, items: Iterable[ItemLike]) -> EnrollResult:
        """Enroll items in ONE call: all or none. An item the case already holds (the same
        hashes) is returned as ``existing``, not added again, so a retry is safe."""
        return self._invoke(_Calls.add_items(case, _items(items)))

    def enroll(
        self, case: str, items: Iterable[ItemLike], *, max_hashes: int = 20_000
    ) -> EnrollResult:
        """Enroll any number of items, in calls of at most 1,000 items and ``max_hashes`` hashes.

        Each call is all-or-nothing and retry-safe; if one fails, the calls before it stay
        committed (calling ``enroll`` again with the same items adds only what is missing).
        The result sums the calls.
        """
        results, offset = [], 0
        for batch in _enroll_batches(_items(items), max_hashes):
            try:
                results.append(self.add_items(case, batch))
            except Allowlisted as exc:
                raise _shifted(exc, offset) from None
            offset += len(batch)
        return _sum_results(case, results)

    def get_case(self, case: str) -> CaseStatus:
        """A case's state, counts and every item (practitioner of its organisation, admin)."""
        return self._invoke(_Calls.get_case(case))

    def get_case_with_secret(self, case_number: str, secret: str) -> CaseStatus:
        """A case's state and items, as its victim (no API key needed)."""
        return self._invoke(_Calls.get_case_with_secret(case_number, secret))

    def withdraw(self, case: str) -> CaseStatus:
        """Withdraw a case (practitioner): its hashes are deleted, matching stops now."""
        return self._invoke(_Calls.withdraw(case))

    def withdraw_item(self, case: str, number: int) -> ItemStatus:
        """Withdraw item ``number`` of a case (practitioner); the case's other items stay."""
        return self._invoke(_Calls.withdraw_item(case, number))

    def withdraw_with_secret(self, case_number: str, secret: str) -> CaseStatus:
        """Withdraw a case as its victim (no API key needed)."""
        return self._invoke(_Calls.withdraw_with_secret(case_number, secret))

    def withdraw_item_with_secret(
        self, case_number: str, secret: str, item_number: int
    ) -> ItemStatus:
        """Withdraw one item as the case's victim (no API key needed)."""
        return self._invoke(_Calls.withdraw_item_with_secret(case_number, secret, item_number))

    def create_api_key(
        self, name: str, role: Role | str, organization: int | None = None
    ) -> NewApiKey:
        """Create an API key (admin); its ``key`` is shown once."""
        return self._invoke(_Calls.create_api_key(name, role, organization))

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every API key, never their key material (admin)."""
        keys, token = self._invoke(_Calls.list_api_keys())
        while token:
            more, token = self._invoke(_Calls.list_api_keys(token))
            keys += more
        return keys

    def revoke_api_key(self, key_id: int) -> ApiKeyRecord:
        """Revoke an API key (admin); the server refuses it within seconds."""
        return self._invoke(_Calls.revoke_api_key(key_id))

    def update_key_policy(
        self,
        key_id: int,
        *,
        exact_distances: bool | None = None,
        max_distance: dict[str, int] | None = None,
        daily_hashes: int | None = None,
        named_in_reports: bool | None = None,
    ) -> KeyPolicy:
        """Change what a key may learn and spend (admin); None leaves a setting as it is.

        ``exact_distances=True`` is a risk: that key's matches carry exact distances, enough
        to read a stored hash back from one re-upload. ``max_distance`` (per signal name,
        stricter than the bank's; ``{}`` clears), ``daily_hashes`` (0 clears),
        ``named_in_reports`` (the partner agreed to be named beside its verdicts).
        """
        return self._invoke(
            _Calls.update_key_policy(
                key_id, exact_distances, max_distance, daily_hashes, named_in_reports
            )
        )

    def restore_api_key(self, key_id: int) -> KeyPolicy:
        """Lift the suspension probing detection put on a key (admin)."""
        return self._invoke(_Calls.restore_api_key(key_id))

    def create_organization(self, name: str) -> Organisation:
        """Create an organisation (admin)."""
        return self._invoke(_Calls.create_organization(name))

    def stats(self) -> BankStats:
        """Index sizes and case counts (admin); never a hash value."""
        return self._invoke(_Calls.stats())

    def add_allowlist(self, hashes: Sequence[Hash], *, label: str) -> AllowlistAdded:
        """Add the hashes of a benign, widely shared picture to the allowlist (admin): no item
        looking like it is enrolled from then on, and matches on it are suppressed.
        ``version`` of the result is -1 (the server's version is not sent)."""
        return self._invoke(_Calls.add_allowlist(hashes, label))

    def list_allowlist(self) -> list[AllowlistEntry]:
        """Every allowlist entry: ids, signal types, labels, sources, dates; never values."""
        entries, token = self._invoke(_Calls.list_allowlist())
        while token:
            more, token = self._invoke(_Calls.list_allowlist(token))
            entries += more
        return entries

    def remove_allowlist_entry(self, entry_id: int) -> AllowlistEntry:
        """Remove one allowlist entry (admin)."""
        return self._invoke(_Calls.remove_allowlist_entry(entry_id))

    def seed_allowlist(self) -> tuple[int, int]:
        """Add the generated seed again (admin): (added now, held already)."""
        return self._invoke(_Calls.seed_allowlist())


class AsyncClient(_ClientBase):
    """The asyncio client: the same methods as ``Client``, awaited. Use within one event loop.

    >>> async with AsyncClient("127.0.0.1:50051", "mk_...") as client:  # doctest: +SKIP
    ...     results = await client.match([Query(upload_hashes)])
    """

    _secure_channel = staticmethod(grpc.aio.secure_channel)
    _insecure_channel = staticmethod(grpc.aio.insecure_channel)

    async def _invoke(self, call: _Call[R]) -> R:
        try:
            reply = await self._method(call)(
                call.request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return call.parse(reply)

    async def close(self) -> None:
        """Close the connection."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def healthy(self, service: str = "") -> bool:
        """True when the server reports SERVING (its kernels compiled and its index loaded)."""
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def match(self, queries: Iterable[QueryLike]) -> list[QueryResult]:
        """Look up images; one result per query (see ``Client.match``)."""
        return await self._invoke(_Calls.match(queries))

    async def stream_match(
        self, batches: AsyncIterable[Iterable[QueryLike]] | Iterable[Iterable[QueryLike]]
    ) -> AsyncIterator[list[QueryResult]]:
        """Stream batches of queries (an async or plain iterable); yields one list of results
        per batch, in order. No deadline applies."""

        async def requests() -> AsyncIterator[match_pb2.StreamMatchRequest]:
            if isinstance(batches, AsyncIterable):
                async for batch in batches:
                    yield match_pb2.StreamMatchRequest(queries=contract.queries_to_pb(batch))
            else:
                for batch in batches:
                    yield match_pb2.StreamMatchRequest(queries=contract.queries_to_pb(batch))

        try:
            async for reply in self._stubs["match"].StreamMatch(
                requests(), metadata=self._metadata
            ):
                yield contract.results_from_pb(reply.results)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def report(
        self, item_id: str, correct: bool, *, reason: ReportReason | str | None = None
    ) -> None:
        """Say whether a matched item was right or wrong (see ``Client.report``)."""
        await self._invoke(_Calls.report(item_id, correct, reason))

    async def review_queue(self, organization: int | None = None) -> list[ReviewEntry]:
        """Quarantined items waiting for review (see ``Client.review_queue``)."""
        entries, token = await self._invoke(_Calls.review_queue(organization))
        while token:
            more, token = await self._invoke(_Calls.review_queue(organization, token))
            entries += more
        return entries

    async def review_item(
        self, case: str, number: int, decision: ReviewDecision | str, *, note: str = ""
    ) -> ItemStatus:
        """Decide on a quarantined item (see ``Client.review_item``)."""
        return await self._invoke(_Calls.review_item(case, number, decision, note))

    async def create_case(self, organization: int | None = None) -> NewCase:
        """Open a case (see ``Client.create_case``)."""
        return await self._invoke(_Calls.create_case(organization))

    async def add_items(self, case: str, items: Iterable[ItemLike]) -> EnrollResult:
        """Enroll items in one call, all or none (see ``Client.add_items``)."""
        return await self._invoke(_Calls.add_items(case, _items(items)))

    async def enroll(
        self, case: str, items: Iterable[ItemLike], *, max_hashes: int = 20_000
    ) -> EnrollResult:
        """Enroll any number of items in batched calls (see ``Client.enroll``)."""
        results, offset = [], 0
        for batch in _enroll_batches(_items(items), max_hashes):
            try:
                results.append(await self.add_items(case, batch))
            except Allowlisted as exc:
                raise _shifted(exc, offset) from None
            offset += len(batch)
        return _sum_results(case, results)

    async def get_case(self, case: str) -> CaseStatus:
        """A case's state, counts and items (see ``Client.get_case``)."""
        return await self._invoke(_Calls.get_case(case))

    async def get_case_with_secret(self, case_number: str, secret: str) -> CaseStatus:
        """A case's state and items, as its victim (see ``Client.get_case_with_secret``)."""
        return await self._invoke(_Calls.get_case_with_secret(case_number, secret))

    async def withdraw(self, case: str) -> CaseStatus:
        """Withdraw a case (see ``Client.withdraw``)."""
        return await self._invoke(_Calls.withdraw(case))

    async def withdraw_item(self, case: str, number: int) -> ItemStatus:
        """Withdraw one item of a case (see ``Client.withdraw_item``)."""
        return await self._invoke(_Calls.withdraw_item(case, number))

    async def withdraw_with_secret(self, case_number: str, secret: str) -> CaseStatus:
        """Withdraw a case as its victim (see ``Client.withdraw_with_secret``)."""
        return await self._invoke(_Calls.withdraw_with_secret(case_number, secret))

    async def withdraw_item_with_secret(
        self, case_number: str, secret: str, item_number: int
    ) -> ItemStatus:
        """Withdraw one item as its victim (see ``Client.withdraw_item_with_secret``)."""
        return await self._invoke(
            _Calls.withdraw_item_with_secret(case_number, secret, item_number)
        )

    async def create_api_key(
        self, name: str, role: Role | str, organization: int | None = None
    ) -> NewApiKey:
        """Create an API key (see ``Client.create_api_key``)."""
        return await self._invoke(_Calls.create_api_key(name, role, organization))

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every API key (see ``Client.list_api_keys``)."""
        keys, token = await self._invoke(_Calls.list_api_keys())
        while token:
            more, token = await self._invoke(_Calls.list_api_keys(token))
            keys += more
        return keys

    async def revoke_api_key(self, key_id: int) -> ApiKeyRecord:
        """Revoke an API key (see ``Client.revoke_api_key``)."""
        return await self._invoke(_Calls.revoke_api_key(key_id))

    async def update_key_policy(
        self,
        key_id: int,
        *,
        exact_distances: bool | None = None,
        max_distance: dict[str, int] | None = None,
        daily_hashes: int | None = None,
        named_in_reports: bool | None = None,
    ) -> KeyPolicy:
        """Change a key's policy (see ``Client.update_key_policy``)."""
        return await self._invoke(
            _Calls.update_key_policy(
                key_id, exact_distances, max_distance, daily_hashes, named_in_reports
            )
        )

    async def restore_api_key(self, key_id: int) -> KeyPolicy:
        """Lift a key's suspension (see ``Client.restore_api_key``)."""
        return await self._invoke(_Calls.restore_api_key(key_id))

    async def add_allowlist(self, hashes: Sequence[Hash], *, label: str) -> AllowlistAdded:
        """Add hashes to the allowlist (see ``Client.add_allowlist``)."""
        return await self._invoke(_Calls.add_allowlist(hashes, label))

    async def list_allowlist(self) -> list[AllowlistEntry]:
        """Every allowlist entry, never values (see ``Client.list_allowlist``)."""
        entries, token = await self._invoke(_Calls.list_allowlist())
        while token:
            more, token = await self._invoke(_Calls.list_allowlist(token))
            entries += more
        return entries

    async def remove_allowlist_entry(self, entry_id: int) -> AllowlistEntry:
        """Remove one allowlist entry (see ``Client.remove_allowlist_entry``)."""
        return await self._invoke(_Calls.remove_allowlist_entry(entry_id))

    async def seed_allowlist(self) -> tuple[int, int]:
        """Add the seed again (see ``Client.seed_allowlist``)."""
        return await self._invoke(_Calls.seed_allowlist())

    async def create_organization(self, name: str) -> Organisation:
        """Create an organisation (see ``Client.create_organization``)."""
        return await self._invoke(_Calls.create_organization(name))

    async def stats(self) -> BankStats:
        """Index sizes and case counts (see ``Client.stats``)."""
        return await self._invoke(_Calls.stats())


def as_dict(result: Any) -> Any:
    """A JSON-friendly form of any result above: dataclasses as dicts, enums as their values,
    datetimes as ISO text, signal types by name. Never holds a secret it was not given."""
    if isinstance(result, SignalType):
        return result.name
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        out = {f.name: as_dict(getattr(result, f.name)) for f in dataclasses.fields(result)}
        for name in ("name", "match_count", "active", "description"):
            prop = getattr(type(result), name, None)
            if isinstance(prop, property):
                out[name] = as_dict(getattr(result, name))
        return out
    if isinstance(result, enum.Enum):
        return result.value
    if isinstance(result, datetime):
        return result.isoformat()
    if isinstance(result, Mapping):
        return {str(k): as_dict(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return [as_dict(v) for v in result]
    return result
