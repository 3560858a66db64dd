"""The gRPC servicers: convert the request, call the bank, convert the reply.

Auth, limits, metrics and error mapping are the guard's (``auth.Guard``); conversions are
``wire``'s. The bank is synchronous: calls that may take long (commits with fsync, big match
batches) run in a thread so the event loop keeps serving; small matches run inline, where a
thread hop would cost more than the search.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from matcher.bank import Bank
from matcher.errors import InvalidInput, NotFound
from matcher.principal import Principal, Role
from matcher.service import wire
from matcher.service.auth import PUBLIC, Guard, peer_host, rpc, stream
from matcher.service.limits import Limiter
from matcher.service.metrics import Metrics
from matcher.signals import SIGNALS
from matcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cases_pb2,
    cases_pb2_grpc,
    hashes_pb2,
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
    require_deadline: bool = True
    """Refuse Match calls without a deadline: a partner pipeline must say how long it waits."""
    inline_hashes: int = 64
    """Matches of up to this many hashes run on the event loop; bigger ones in a thread."""
    secret_failures: int = 5
    """Failed victim withdrawals allowed per case and per peer before a pause..."""
    secret_window_seconds: float = 900.0
    """...refilled over this many seconds."""


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


def _queries_cost(request: Any) -> int:
    return max(1, len(request.queries))


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


def _org(name: str) -> int | None:
    return wire.id_from_name(name, "organizations", field="organization") if name else None


class MatchServicer(_Base, match_pb2_grpc.MatchServiceServicer):
    """Matching for partners: ``Match``, ``StreamMatch``, ``ReportMatch``."""

    async def _match(self, queries_pb: Any, *, field: str) -> list[match_pb2.QueryResult]:
        queries = wire.queries_from_pb(queries_pb, max_batch=self.limits.max_batch, field=field)
        n_hashes = sum(len(q.hashes) for q in queries)
        if n_hashes <= self.limits.inline_hashes:
            results = self.bank.match(queries)
        else:
            results = await _run(self.bank.match, queries)
        signals: dict[str, int] = {}
        for q in queries:
            for h in q.hashes:
                signals[h.signal.name] = signals.get(h.signal.name, 0) + 1
        for name, count in signals.items():
            self.metrics.count_hashes("match", name, count)
        self.metrics.matches.inc(sum(map(len, results)))
        return wire.results_to_pb(queries_pb, results)

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
        if not request.match_id:
            raise InvalidInput("match_id is required", field="match_id")
        if request.verdict == match_pb2.VERDICT_UNSPECIFIED:
            raise InvalidInput("verdict must be CORRECT or WRONG", field="verdict")
        correct = request.verdict == match_pb2.VERDICT_CORRECT
        await _run(self.bank.report, request.match_id, correct, by=who)
        return match_pb2.ReportMatchResponse()


class CaseServicer(_Base, cases_pb2_grpc.CaseServiceServicer):
    """Cases for practitioners, and withdrawal by victims."""

    def __init__(self, bank: Bank, guard: Guard, metrics: Metrics, limits: ServiceLimits) -> None:
        super().__init__(bank, guard, metrics, limits)
        per_second = limits.secret_failures / limits.secret_window_seconds
        self.secret_failures = Limiter(rate=per_second, burst=limits.secret_failures)

    @rpc(*_PRACTITIONER)
    async def CreateCase(self, request: Any, context: Any, who: Principal) -> Any:
        new = await _run(self.bank.create_case, by=who, org_id=_org(request.organization))
        status = await _run(self.bank.case_status, new.number, by=who)
        log.info("case created by %s", who.audit_name)
        return cases_pb2.CreateCaseResponse(
            case=wire.case_to_pb(status), withdrawal_secret=new.secret
        )

    @rpc(*_PRACTITIONER, cost=lambda r: max(1, len(r.hashes) // 100))
    async def AddHashes(self, request: Any, context: Any, who: Principal) -> Any:
        number = wire.case_number_from_name(request.name)
        hashes = wire.hashes_from_pb(request.hashes)
        result = await _run(self.bank.enroll, number, hashes, by=who)
        for h in hashes:
            self.metrics.count_hashes("enroll", h.signal.name)
        log.info("%d hashes enrolled by %s", result.added, who.audit_name)
        return wire.enroll_result_to_pb(result)

    @rpc(*_PRACTITIONER)
    async def GetCase(self, request: Any, context: Any, who: Principal) -> Any:
        number = wire.case_number_from_name(request.name)
        status = await _run(self.bank.case_status, number, by=who)
        return cases_pb2.GetCaseResponse(case=wire.case_to_pb(status))

    @rpc(*_PRACTITIONER)
    async def WithdrawCase(self, request: Any, context: Any, who: Principal) -> Any:
        number = wire.case_number_from_name(request.name)
        status = await _run(self.bank.withdraw, number, by=who)
        log.info("case withdrawn by %s", who.audit_name)
        return cases_pb2.WithdrawCaseResponse(case=wire.case_to_pb(status))

    @rpc(PUBLIC)
    async def WithdrawCaseWithSecret(self, request: Any, context: Any, who: None) -> Any:
        number = request.case_number.strip().upper()
        if not number:
            raise InvalidInput("case_number is required", field="case_number")
        if not request.secret:
            raise InvalidInput("secret is required", field="secret")
        peer = peer_host(context)
        # Failures are limited per case (guesses spread over many addresses) and per peer (one
        # address guessing over many cases). Successes cost nothing.
        self.secret_failures.check(("case", number))
        self.secret_failures.check(("peer", peer))
        try:
            status = await _run(self.bank.withdraw_with_secret, number, request.secret)
        except NotFound:
            self.secret_failures.spend(("case", number))
            self.secret_failures.spend(("peer", peer))
            log.info("victim withdrawal refused (wrong number or secret)")
            raise
        log.info("case withdrawn by its victim")
        return cases_pb2.WithdrawCaseWithSecretResponse(
            state=wire.state_to_pb(status.state), withdraw_time=wire.timestamp(status.withdrawn_at)
        )


class AdminServicer(_Base, admin_pb2_grpc.AdminServiceServicer):
    """Keys, organisations and statistics for operators."""

    @rpc(Role.ADMIN)
    async def CreateApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        role = wire.role_from_pb(request.role)
        new = await _run(
            self.bank.create_api_key,
            request.display_name,
            role,
            org_id=_org(request.organization),
            by=who,
        )
        log.info("API key %d created by %s", new.record.id, who.audit_name)
        return admin_pb2.CreateApiKeyResponse(api_key=wire.api_key_to_pb(new.record), key=new.key)

    @rpc(Role.ADMIN)
    async def ListApiKeys(self, request: Any, context: Any, who: Principal) -> Any:
        keys = await _run(self.bank.list_api_keys, by=who)
        page, nxt = _page(keys, request.page_size, request.page_token)
        return admin_pb2.ListApiKeysResponse(
            api_keys=[wire.api_key_to_pb(k) for k in page], next_page_token=nxt
        )

    @rpc(Role.ADMIN)
    async def RevokeApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        key_id = wire.id_from_name(request.name, "apiKeys", field="name")
        record = await _run(self.bank.revoke_api_key, key_id, by=who)
        log.info("API key %d revoked by %s", key_id, who.audit_name)
        return admin_pb2.RevokeApiKeyResponse(api_key=wire.api_key_to_pb(record))

    @rpc(Role.ADMIN)
    async def CreateOrganization(self, request: Any, context: Any, who: Principal) -> Any:
        org = await _run(self.bank.create_organisation, request.display_name, by=who)
        return admin_pb2.CreateOrganizationResponse(organization=wire.organization_to_pb(org))

    @rpc(Role.ADMIN)
    async def ListOrganizations(self, request: Any, context: Any, who: Principal) -> Any:
        orgs = await _run(self.bank.list_organisations, by=who)
        page, nxt = _page(orgs, request.page_size, request.page_token)
        return admin_pb2.ListOrganizationsResponse(
            organizations=[wire.organization_to_pb(o) for o in page], next_page_token=nxt
        )

    @rpc(Role.ADMIN)
    async def GetBankStats(self, request: Any, context: Any, who: Principal) -> Any:
        stats = await _run(self.bank.stats, by=who)
        return admin_pb2.GetBankStatsResponse(
            ready=stats.ready,
            indexed=[
                hashes_pb2.SignalCount(signal_type=wire.signal_to_pb(SIGNALS[name]), count=n)
                for name, n in stats.indexed.items()
            ],
            active_cases=stats.cases.get("active", 0),
            withdrawn_cases=stats.cases.get("withdrawn", 0),
            index_load_seconds=stats.load_seconds or 0.0,
        )
