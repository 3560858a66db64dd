"""The gRPC servicers: convert the request, call the bank, convert the reply.

Auth, limits, metrics and error mapping are the guard's (``auth.Guard``); conversions and
validation are ``matcher.contract``'s. The bank is synchronous: calls that may take long
(commits with fsync, scrypt for a victim's secret, big match batches) run in a thread so the
event loop keeps serving; small matches run inline, where a thread hop would cost more than the
search.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from matcher import contract, credentials
from matcher.bank import Bank
from matcher.errors import InvalidInput, NotFound
from matcher.principal import Principal, Role
from matcher.service.auth import PUBLIC, Guard, peer_host, rpc, stream
from matcher.service.limits import Limiter
from matcher.service.metrics import Metrics
from matcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cases_pb2,
    cases_pb2_grpc,
    match_pb2,
    match_pb2_grpc,
)

__all__ = ["AdminServicer", "CaseServicer", "MatchServicer", "ServiceLimits"]

log = logging.getLogger("matcher.service")

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceLimits:
    """Limits the servicers enforce (see ``matcher serve --help``)."""

    max_batch: int = 1000
    """Most queries in one Match request or StreamMatch message."""
    max_items: int = 1000
    """Most items in one AddItems request..."""
    max_enroll_hashes: int = 100_000
    """...and most hashes over all of them (a message of about 4 MB)."""
    require_deadline: bool = True
    """Refuse Match calls without a deadline: a partner pipeline must say how long it waits."""
    inline_hashes: int = 64
    """Matches of up to this many hashes run on the event loop; bigger ones in a thread."""
    secret_failures: int = 5
    """Failed victim calls (wrong number or secret) allowed per case and per peer..."""
    secret_window_seconds: float = 900.0
    """...refilled over this many seconds."""


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


def _queries_cost(request: Any) -> int:
    return max(1, len(request.queries))


def _items_cost(request: Any) -> int:
    return max(1, sum(len(item.hashes) for item in request.items) // 100)


def _page(items: list[T], page_size: int, token: str) -> tuple[list[T], str]:
    """Offset pagination over a small, append-only list (keys and organisations)."""
    if page_size < 0:
        raise InvalidInput("page_size must not be negative", field="page_size")
    size = min(page_size or 100, 1000)
    if token and not token.isdigit():
        raise InvalidInput("page_token is not one this server gave", field="page_token")
    start = int(token or 0)
    chunk = items[start : start + size]
    nxt = str(start + size) if start + size < len(items) else ""
    return chunk, nxt


class _Base:
    def __init__(self, bank: Bank, guard: Guard, metrics: Metrics, limits: ServiceLimits) -> None:
        self.bank = bank
        self.guard = guard
        self.metrics = metrics
        self.limits = limits


_PARTNER = (Role.PARTNER, Role.ADMIN)
_PRACTITIONER = (Role.PRACTITIONER, Role.ADMIN)


class MatchServicer(_Base, match_pb2_grpc.MatchServiceServicer):
    """Matching for partners: ``Match``, ``StreamMatch``, ``ReportMatch``."""

    async def _match(self, queries_pb: Any, *, field: str) -> list[match_pb2.QueryResult]:
        queries = contract.queries_from_pb(queries_pb, max_batch=self.limits.max_batch, field=field)
        signals: dict[str, int] = {}
        for q in queries:
            for h in q.hashes:
                signals[h.signal.name] = signals.get(h.signal.name, 0) + 1
        if sum(signals.values()) <= self.limits.inline_hashes:
            results = self.bank.match(queries)
        else:
            results = await _run(self.bank.match, queries)
        for name, count in signals.items():
            self.metrics.count_hashes("match", name, count)
        self.metrics.matches.inc(sum(map(len, results)))
        return contract.results_to_pb(queries, results)

    @rpc(*_PARTNER, cost=_queries_cost)
    async def Match(self, request: Any, context: Any, who: Principal) -> Any:
        if self.limits.require_deadline and context.time_remaining() is None:
            raise InvalidInput(
                "set a deadline on Match calls (e.g. a timeout of 1 s)", field="grpc-timeout"
            )
        return match_pb2.MatchResponse(results=await self._match(request.queries, field="queries"))

    @stream(*_PARTNER)
    async def StreamMatch(self, requests: Any, context: Any, who: Principal) -> AsyncIterator[Any]:
        # One message in, one message out: the next request is read only after this answer is
        # written, so HTTP/2 flow control holds back a sender that outruns us.
        n = 0
        async for request in requests:
            self.guard.admit_more(who, _queries_cost(request))
            results = await self._match(request.queries, field=f"requests[{n}].queries")
            yield match_pb2.StreamMatchResponse(results=results)
            n += 1

    @rpc(*_PARTNER)
    async def ReportMatch(self, request: Any, context: Any, who: Principal) -> Any:
        item_id = contract.item_id_from_pb(request.item_id)
        correct = contract.verdict_from_pb(request.verdict)
        await _run(self.bank.report, item_id, correct, by=who)
        return match_pb2.ReportMatchResponse()


class CaseServicer(_Base, cases_pb2_grpc.CaseServiceServicer):
    """Cases for practitioners, and status and withdrawal for victims."""

    def __init__(self, bank: Bank, guard: Guard, metrics: Metrics, limits: ServiceLimits) -> None:
        super().__init__(bank, guard, metrics, limits)
        per_second = limits.secret_failures / limits.secret_window_seconds
        self.secret_failures = Limiter(rate=per_second, burst=limits.secret_failures)

    @rpc(*_PRACTITIONER)
    async def CreateCase(self, request: Any, context: Any, who: Principal) -> Any:
        org_id = contract.organization_id_from_name(request.organization)
        new = await _run(self.bank.create_case, by=who, org_id=org_id)
        status = await _run(self.bank.case_status, new.number, by=who)
        log.info("case created by %s", who.audit_name)
        return cases_pb2.CreateCaseResponse(
            case=contract.case_to_pb(status), withdrawal_secret=new.secret
        )

    @rpc(*_PRACTITIONER, cost=_items_cost)
    async def AddItems(self, request: Any, context: Any, who: Principal) -> Any:
        number = contract.case_number_from_name(request.name)
        items = contract.items_from_pb(
            request.items,
            max_items=self.limits.max_items,
            max_hashes=self.limits.max_enroll_hashes,
        )
        result = await _run(self.bank.enroll, number, items, by=who)
        for name, n in Counter(h.signal.name for item in items for h in item.hashes).items():
            self.metrics.count_hashes("enroll", name, n)
        log.info(
            "%d items enrolled (%d already held) by %s",
            result.added,
            result.existing,
            who.audit_name,
        )
        return contract.enroll_result_to_pb(result)

    @rpc(*_PRACTITIONER)
    async def GetCase(self, request: Any, context: Any, who: Principal) -> Any:
        number = contract.case_number_from_name(request.name)
        status = await _run(self.bank.case_status, number, by=who)
        return cases_pb2.GetCaseResponse(case=contract.case_to_pb(status, items=True))

    @rpc(*_PRACTITIONER)
    async def WithdrawCase(self, request: Any, context: Any, who: Principal) -> Any:
        number = contract.case_number_from_name(request.name)
        status = await _run(self.bank.withdraw, number, by=who)
        log.info("case withdrawn by %s", who.audit_name)
        return cases_pb2.WithdrawCaseResponse(case=contract.case_to_pb(status))

    @rpc(*_PRACTITIONER)
    async def WithdrawItem(self, request: Any, context: Any, who: Principal) -> Any:
        number, item = contract.item_ref_from_name(request.name)
        status = await _run(self.bank.withdraw_item, number, item, by=who)
        log.info("item withdrawn by %s", who.audit_name)
        return cases_pb2.WithdrawItemResponse(item=contract.item_to_pb(status))

    # -- victims: a case number and its secret instead of an API key

    async def _as_victim(self, request: Any, context: Any, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(case_number, secret, *args)`` for a victim, limiting failed guesses.

        Failures are limited per case (guesses spread over many addresses) and per peer (one
        address guessing over many cases); successes cost nothing. The case's bucket is keyed
        by the normalised number, so ``s5py1c3ed5wj`` and ``S5PY-1C3E-D5WJ`` share one.
        """
        number, secret = contract.case_secret_from_pb(request.case_number, request.secret)
        case_key = ("case", credentials.normalise_case_number(number))
        peer_key = ("peer", peer_host(context))
        self.secret_failures.check(case_key)
        self.secret_failures.check(peer_key)
        try:
            return await _run(fn, number, secret, *args)
        except NotFound:
            self.secret_failures.spend(case_key)
            self.secret_failures.spend(peer_key)
            log.info("victim call refused (wrong number or secret)")
            raise

    @rpc(PUBLIC)
    async def GetCaseWithSecret(self, request: Any, context: Any, who: None) -> Any:
        status = await self._as_victim(request, context, self.bank.case_status_with_secret)
        return cases_pb2.GetCaseWithSecretResponse(case=contract.case_to_pb(status, items=True))

    @rpc(PUBLIC)
    async def WithdrawCaseWithSecret(self, request: Any, context: Any, who: None) -> Any:
        status = await self._as_victim(request, context, self.bank.withdraw_with_secret)
        log.info("case withdrawn by its victim")
        case = contract.case_to_pb(status)
        return cases_pb2.WithdrawCaseWithSecretResponse(
            state=case.state, withdraw_time=case.withdraw_time, case=case
        )

    @rpc(PUBLIC)
    async def WithdrawItemWithSecret(self, request: Any, context: Any, who: None) -> Any:
        number = contract.check_item_number(request.item_number)
        status = await self._as_victim(
            request, context, self.bank.withdraw_item_with_secret, number
        )
        log.info("item withdrawn by its victim")
        return cases_pb2.WithdrawItemWithSecretResponse(item=contract.item_to_pb(status))


class AdminServicer(_Base, admin_pb2_grpc.AdminServiceServicer):
    """Keys, organisations and statistics for operators."""

    @rpc(Role.ADMIN)
    async def CreateApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        role = contract.role_from_pb(request.role)
        org_id = contract.organization_id_from_name(request.organization)
        new = await _run(
            self.bank.accounts.create_api_key, request.display_name, role, org_id=org_id, by=who
        )
        log.info("API key %d created by %s", new.record.id, who.audit_name)
        return admin_pb2.CreateApiKeyResponse(
            api_key=contract.api_key_to_pb(new.record), key=new.key
        )

    @rpc(Role.ADMIN)
    async def ListApiKeys(self, request: Any, context: Any, who: Principal) -> Any:
        keys = await _run(self.bank.accounts.list_api_keys, by=who)
        page, nxt = _page(keys, request.page_size, request.page_token)
        return admin_pb2.ListApiKeysResponse(
            api_keys=[contract.api_key_to_pb(k) for k in page], next_page_token=nxt
        )

    @rpc(Role.ADMIN)
    async def RevokeApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        key_id = contract.id_from_name(request.name, "apiKeys", field="name")
        record = await _run(self.bank.accounts.revoke_api_key, key_id, by=who)
        log.info("API key %d revoked by %s", key_id, who.audit_name)
        return admin_pb2.RevokeApiKeyResponse(api_key=contract.api_key_to_pb(record))

    @rpc(Role.ADMIN)
    async def CreateOrganization(self, request: Any, context: Any, who: Principal) -> Any:
        org = await _run(self.bank.accounts.create_organisation, request.display_name, by=who)
        return admin_pb2.CreateOrganizationResponse(organization=contract.organization_to_pb(org))

    @rpc(Role.ADMIN)
    async def ListOrganizations(self, request: Any, context: Any, who: Principal) -> Any:
        orgs = await _run(self.bank.accounts.list_organisations, by=who)
        page, nxt = _page(orgs, request.page_size, request.page_token)
        return admin_pb2.ListOrganizationsResponse(
            organizations=[contract.organization_to_pb(o) for o in page], next_page_token=nxt
        )

    @rpc(Role.ADMIN)
    async def GetBankStats(self, request: Any, context: Any, who: Principal) -> Any:
        return contract.stats_to_pb(await _run(self.bank.stats, by=who))
