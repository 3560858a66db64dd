"""The gRPC servicers: convert the request, call the bank, convert the reply.

Auth, limits, metrics and error mapping are the guard's (``auth.Guard``); conversions and
validation are ``matcher.contract``'s. The bank is synchronous: calls that may take long
(commits with fsync, scrypt for a victim's secret, big match batches) run in a thread so the
event loop keeps serving. Matches go through ``dispatch.MatchDispatcher``: on a worker thread per
core, concurrent requests gathered into one search.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from matcher import contract, credentials
from matcher.audit import Action
from matcher.bank import Bank
from matcher.bank.probe_counts import SharedProbes
from matcher.bank.probing import Alarm, Banding, ProbeDetector, ProbeLimits, worst_alarm
from matcher.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from matcher.index import one_thread
from matcher.principal import Principal, Role
from matcher.records import ItemMatch, KeyPolicy, Query
from matcher.service.auth import _SUSPENDED, PUBLIC, Guard, Malformed, rpc, stream
from matcher.service.dispatch import MatchDispatcher
from matcher.service.guesses import GuessLimits
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
    match_workers: int | None = None
    """Matches searched at once, each on its own thread (None: one per core; 0: every match
    inline on the event loop, as requests of up to 64 hashes, one upload, ran before issue 15;
    kept for comparison in the benchmarks)..."""
    batch_hashes: int = 2048
    """...and the most hashes of concurrent requests gathered into one search."""
    max_query_hashes: int = 64
    """Most hashes in one query (one image: the query profile's views fit easily)..."""
    max_request_hashes: int = 32_000
    """...and over all queries of one request or stream message."""
    stream_idle_seconds: float = 600.0
    """A StreamMatch that sends nothing for this long is closed (UNAVAILABLE)."""
    banding: Banding = field(default_factory=Banding)
    """The bank's thresholds and bands (what partners learn)."""
    probing: ProbeLimits = field(default_factory=ProbeLimits)
    """Probing detection's bounds."""
    secret_failures: int = 5
    """Failed victim calls (wrong number or secret) allowed per peer address, refused with
    RetryInfo beyond (a victim is refused only for their own address's failures)..."""
    secret_window_seconds: float = 900.0
    """...within any window of this many seconds (sliding by a fifteenth of it), counted in
    the store over every replica. Per case and overall, failures past the same bound are not
    refused but answered after a backoff (doubling per failure, at most
    ``secret_backoff_seconds``): the correct secret is always checked and always works."""
    secret_backoff_seconds: float = 10.0
    secret_overall_failures: int = 200
    """Failed victim calls over all cases and addresses before every failure backs off."""
    secret_checks: int = 4
    """Secret checks (scrypt) at a time; more wait their turn."""


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


def _queries_cost(request: Any) -> int:
    # Charged per hash, not per query: a query of 257 hashes costs 257 tokens.
    return max(1, sum(len(q.hashes) for q in request.queries))


_END = object()


async def _next(it: Any) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _END


def _items_cost(request: Any) -> int:
    return max(1, sum(len(item.hashes) for item in request.items) // 100)


def _page(items: list[T], page_size: int, token: str) -> tuple[list[T], str]:
    """Offset pagination over a small, append-only list (keys and organisations)."""
    if page_size < 0:
        raise InvalidInput("page_size must not be negative", field="page_size")
    size = min(page_size or 100, 1000)
    if token and not (len(token) <= 18 and token.isascii() and token.isdigit()):
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
    """Matching for partners: ``Match``, ``StreamMatch``, ``ReportMatch``.

    What a partner learns is decided here (``matcher.bank.probing``): bands instead of
    distances unless its key was granted them, the bank's thresholds (stricter per key), and
    probing detection with throttling and suspension.
    """

    def __init__(self, bank: Bank, guard: Guard, metrics: Metrics, limits: ServiceLimits) -> None:
        super().__init__(bank, guard, metrics, limits)
        self.probes = ProbeDetector(limits.probing)
        self._band_key = bank.store.secret_key()
        self.shared_probes = SharedProbes(bank.store, self._band_key, limits.probing)
        self._daily: dict[int, tuple[int, int]] = {}
        self.dispatcher: MatchDispatcher[Query, list[ItemMatch]] = MatchDispatcher(
            self._search,
            workers=limits.match_workers,
            batch_hashes=limits.batch_hashes,
            size=lambda queries: sum(len(q.hashes) for q in queries),
        )

    def _search(self, queries: Sequence[Query]) -> list[list[ItemMatch]]:
        # A batch running beside another uses its own thread only (each core already has a
        # search); a batch alone may still split over the index's threads.
        if self.dispatcher.in_flight > 1:
            with one_thread():
                return self.bank.match(queries)
        return self.bank.match(queries)

    def _spend_daily(self, who: Principal, policy: KeyPolicy, hashes: int) -> None:
        budget = policy.daily_hashes
        if not budget or who.key_id is None:
            return
        now = time.time()
        day = int(now // 86_400)
        held_day, used = self._daily.get(who.key_id, (day, 0))
        if held_day != day:
            used = 0
        if used + hashes > budget:
            wait = (day + 1) * 86_400 - now
            raise RateLimited(
                f"this key's daily budget of {budget:,} hashes is spent: try again in "
                f"{wait:.0f} s (at 00:00 UTC)",
                retry_after=wait,
            )
        self._daily[who.key_id] = (day, used + hashes)

    async def _alarm(self, who: Principal, alarm: Alarm) -> None:
        """Log, audit and count a probing alarm, then throttle or suspend (always raises)."""
        key_id = who.key_id or 0
        self.metrics.probe_alarm(alarm.kind, alarm.action)
        item = self.bank.item_number(alarm.item_id) if alarm.item_id else None
        detail: dict[str, object] = {"kind": alarm.kind, "count": alarm.count, "item": item}
        log.warning(
            "probing suspected: key %d, %s count %d%s: %s",
            key_id,
            alarm.kind,
            alarm.count,
            f" on item {item}" if item is not None else "",
            "suspended" if alarm.action == "suspend" else "throttled",
        )
        if alarm.action == "suspend":
            await _run(
                self.bank.accounts.suspend_api_key,
                key_id,
                reason=alarm.kind,
                detail={k: v for k, v in detail.items() if isinstance(v, int)},
                by=Principal.operator("probing"),
            )
            self.guard.forget(key_id)
            self.probes.forget(key_id)
            raise PermissionDenied(_SUSPENDED)
        wait = self.limits.probing.throttle_seconds
        self.probes.hold(key_id, wait)
        # In the store, so every replica refuses the key: its hits at once (the store's
        # counts), everything within its key cache period (``KeyPolicy.throttled_until``).
        await _run(
            self.bank.store.throttle_probes,
            key_id,
            int((time.time() + wait) * 1000),
            actor=who,
            detail={"key_id": key_id, **detail},
        )
        raise RateLimited(
            f"throttled: this key's queries look like probing for stored hashes; try again in "
            f"{wait:.0f} s",
            retry_after=wait,
        )

    def _thresholds(self, policy: KeyPolicy) -> Callable[[Any], int]:
        banding = self.limits.banding
        return lambda signal: banding.threshold(signal, policy.max_distance)

    def _bounded(self, queries: list[Query], policy: KeyPolicy) -> list[Query]:
        """The queries with the distances they are searched at: the bank's thresholds, the
        key's stricter ones, and (granted keys only) the caller's own."""
        banding = self.limits.banding
        if not banding.match_distance and not policy.max_distance:
            return queries  # every signal's default: what a query without a distance gets
        threshold = self._thresholds(policy)
        out = []
        for q in queries:
            mine = {}
            for h in q.hashes:
                distance = threshold(h.signal)
                if q.max_distance is not None:
                    distance = min(distance, q.distance_for(h.signal))
                mine[h.signal.name] = distance
            out.append(Query(q.hashes, mine, q.query_id))
        return out

    def _answer(
        self, who: Principal, policy: KeyPolicy, queries: Sequence[Query], results: Any
    ) -> list[list[ItemMatch]]:
        key_id = who.key_id or 0
        banding = self.limits.banding
        out = []
        for q, matches in zip(queries, results, strict=True):
            out.append(
                [
                    dataclasses.replace(
                        m,
                        band=banding.band(m, self._band_key, key_id, q),
                        distance=m.distance if policy.exact_distances else None,
                    )
                    for m in matches
                ]
            )
        return out

    async def _match(
        self, queries_pb: Any, who: Principal, *, field: str
    ) -> list[match_pb2.QueryResult]:
        queries = contract.queries_from_pb(
            queries_pb,
            max_batch=self.limits.max_batch,
            max_query_hashes=self.limits.max_query_hashes,
            max_hashes=self.limits.max_request_hashes,
            field=field,
        )
        policy = self.guard.policy(who)
        if not policy.exact_distances:
            for i, q in enumerate(queries):
                if q.max_distance is not None:
                    raise PermissionDenied(
                        f"{field}[{i}].max_distance: only keys granted exact distances choose "
                        "a distance; the server decides the threshold"
                    )
        signals: dict[str, int] = {}
        for q in queries:
            for h in q.hashes:
                signals[h.signal.name] = signals.get(h.signal.name, 0) + 1
        total = sum(signals.values())
        key_id = who.key_id or 0
        wait = self.probes.throttled(key_id)
        if policy.throttled_until is not None:  # by any replica (read with the key's policy)
            wait = max(wait, policy.throttled_until.timestamp() - time.time())
        if wait > 0:
            raise RateLimited(
                f"throttled: this key's queries look like probing for stored hashes; try "
                f"again in {wait:.0f} s",
                retry_after=wait,
            )
        self._spend_daily(who, policy, total)
        # This replica's own watch over every hash (misses too): a suspension is final at
        # once; a throttle waits until the request's hits are in the store's counts, so that
        # the counts every replica shares miss nothing this replica refused.
        alarm = self.probes.before(key_id, queries)
        if alarm is not None and alarm.action == "suspend":
            await self._alarm(who, alarm)
        searched = self._bounded(queries, policy)
        results = await self.dispatcher.match(searched)
        wait = 0.0
        if any(results):
            # Hits are recorded and counted in the store before anything is answered (one
            # transaction on a worker thread); a request that hit nothing skips this.
            check = await _run(
                self.shared_probes.check, key_id, searched, results, self._thresholds(policy)
            )
            alarm = worst_alarm([a for a in (alarm, check.alarm) if a is not None])
            wait = check.wait
        if alarm is not None:
            await self._alarm(who, alarm)
        if wait > 0:  # throttled by another replica's alarm: not news, no audit
            self.probes.hold(key_id, wait)
            raise RateLimited(
                f"throttled: this key's queries look like probing for stored hashes; try "
                f"again in {wait:.0f} s",
                retry_after=wait,
            )
        for name, count in signals.items():
            self.metrics.count_hashes("match", name, count)
        matched = sum(map(len, results))
        self.metrics.matches.inc(matched)
        self.metrics.partner(key_id, total, matched)
        return contract.results_to_pb(queries, self._answer(who, policy, searched, results))

    @rpc(*_PARTNER, cost=_queries_cost)
    async def Match(self, request: Any, context: Any, who: Principal) -> Any:
        if self.limits.require_deadline and context.time_remaining() is None:
            raise InvalidInput(
                "set a deadline on Match calls (e.g. a timeout of 1 s)", field="grpc-timeout"
            )
        results = await self._match(request.queries, who, field="queries")
        return match_pb2.MatchResponse(results=results)

    @stream(*_PARTNER)
    async def StreamMatch(self, requests: Any, context: Any, who: Principal) -> AsyncIterator[Any]:
        # One message in, one message out: the next request is read only after this answer is
        # written, so HTTP/2 flow control holds back a sender that outruns us. While waiting
        # for the next message the key is re-checked every key-cache period (a revoked or
        # suspended key's stream ends), and an idle stream is closed.
        n = 0
        idle = 0.0
        step = max(0.05, min(self.guard.key_cache_seconds, self.limits.stream_idle_seconds))
        it = requests.__aiter__()
        pending: asyncio.Task[Any] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(_next(it))
                done, _ = await asyncio.wait({pending}, timeout=step)
                who = self.guard.recheck(context)
                if not done:
                    idle += step
                    if idle >= self.limits.stream_idle_seconds:
                        raise Unavailable(
                            f"stream closed after {idle:.0f} s without a message: open a new one"
                        )
                    continue
                request, pending, idle = pending.result(), None, 0.0
                if request is _END:
                    return
                if isinstance(request, Malformed):
                    raise request.error(f"requests[{n}]")
                self.guard.admit_more(who, _queries_cost(request))
                results = await self._match(request.queries, who, field=f"requests[{n}].queries")
                yield match_pb2.StreamMatchResponse(results=results)
                n += 1
        finally:
            if pending is not None:
                pending.cancel()

    @rpc(*_PARTNER)
    async def ReportMatch(self, request: Any, context: Any, who: Principal) -> Any:
        item_id = contract.item_id_from_pb(request.item_id)
        correct = contract.verdict_from_pb(request.verdict)
        reason = contract.reason_from_pb(request.reason)
        quarantine = await _run(self.bank.report, item_id, correct, by=who, reason=reason)
        if quarantine is not None:
            item = self.bank.item_number(item_id)
            log.warning(
                "item id %s quarantined: %d partners reported it wrong", item, quarantine.partners
            )
        return match_pb2.ReportMatchResponse()


class CaseServicer(_Base, cases_pb2_grpc.CaseServiceServicer):
    """Cases for practitioners, and status and withdrawal for victims."""

    def __init__(self, bank: Bank, guard: Guard, metrics: Metrics, limits: ServiceLimits) -> None:
        super().__init__(bank, guard, metrics, limits)
        # Counted in the store: every replica's failures count against one budget.
        self.guesses = GuessLimits(
            bank.store,
            bank.store.secret_key(),
            failures=limits.secret_failures,
            window=limits.secret_window_seconds,
            overall=limits.secret_overall_failures,
            backoff=limits.secret_backoff_seconds,
        )
        self._checks: asyncio.Semaphore | None = None

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
        """Call ``fn(case_number, secret, *args)`` for a victim, limiting failed guesses so
        that guessing stays hopeless and the victim is never locked out.

        - Per peer address: failures past the budget are refused with RetryInfo, saying when
          to try again. Only this address's own failures count against it.
        - Every budget is counted in the store (``matcher.service.guesses``), so failures
          spread over several replicas count together: one read per call, one write per
          failure, the address and the case only as keyed hashes.
        - Per case (keyed by the normalised number: ``s5py1c3ed5wj`` and ``S5PY-1C3E-D5WJ``
          share one) and overall: failures past the budget make later calls *wait* (a backoff
          doubling per failure, at most ``secret_backoff_seconds``), never refuse them. So a
          stranger who knows the case number slows the victim down by seconds at most; the
          correct secret is always checked, and always works.
        - At most ``secret_checks`` secret checks (scrypt) run at a time, which caps guesses
          over all addresses (~80 a second on two cores) against 100-bit secrets.

        The number and secret are bounded in length (``contract.case_secret_from_pb``) before
        any state is kept for them. Wrong attempts are logged with the address and audited with
        the case (when it exists), never with the secret; the store never holds the address.
        """
        number, secret = contract.case_secret_from_pb(request.case_number, request.secret)
        case = credentials.normalise_case_number(number)
        peer = self.guard.client_host(context)[:64]
        verdict = await _run(self.guesses.check, peer, case)
        if verdict.refuse_for is not None:
            self.metrics.victim_refused.labels("address").inc()
            log.info("victim call refused: too many failures from this address")
            raise RateLimited(
                "too many failed attempts from your address: try again in "
                f"{max(1, round(verdict.refuse_for))} s",
                retry_after=verdict.refuse_for,
            )
        if verdict.wait:
            await asyncio.sleep(verdict.wait)
        if self._checks is None:
            self._checks = asyncio.Semaphore(self.limits.secret_checks)
        try:
            async with self._checks:
                return await _run(fn, number, secret, *args)
        except NotFound:
            await _run(self.guesses.failed, peer, case)
            self.metrics.victim_refused.labels("secret").inc()
            record = await _run(self.bank.store.get_case, case)
            case_id = record.id if record is not None else None
            log.info(
                "victim call refused (wrong number or secret)%s from %s",
                f" on case id {case_id}" if case_id is not None else "",
                peer,
            )
            # The address goes to the log line above, never into the store (audit included).
            await _run(
                self.bank.store.record_audit,
                Action.VICTIM_REFUSED,
                actor=Principal.victim(),
                case_id=case_id,
            )
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

    # -- review of quarantined items

    @rpc(*_PRACTITIONER)
    async def ListReviewQueue(self, request: Any, context: Any, who: Principal) -> Any:
        org_id = contract.organization_id_from_name(request.organization)
        entries = await _run(self.bank.review_queue, by=who, org_id=org_id)
        page, nxt = _page(entries, request.page_size, request.page_token)
        return cases_pb2.ListReviewQueueResponse(
            entries=[contract.review_entry_to_pb(e) for e in page], next_page_token=nxt
        )

    @rpc(*_PRACTITIONER)
    async def ReviewItem(self, request: Any, context: Any, who: Principal) -> Any:
        number, item = contract.item_ref_from_name(request.name)
        decision = contract.review_decision_from_pb(request.decision)
        note = contract.review_note_from_pb(request.note)
        status = await _run(self.bank.review_item, number, item, decision, by=who, note=note)
        log.info("quarantined item reviewed (%s) by %s", decision, who.audit_name)
        return cases_pb2.ReviewItemResponse(item=contract.item_to_pb(status))


class AdminServicer(_Base, admin_pb2_grpc.AdminServiceServicer):
    """Keys, organisations and statistics for operators."""

    @rpc(Role.ADMIN)
    async def CreateApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        role = contract.role_from_pb(request.role)
        org_id = contract.organization_id_from_name(request.organization)
        name = contract.display_name_from_pb(request.display_name)
        new = await _run(self.bank.accounts.create_api_key, name, role, org_id=org_id, by=who)
        log.info("API key %d created by %s", new.record.id, who.audit_name)
        return admin_pb2.CreateApiKeyResponse(
            api_key=contract.api_key_to_pb(new.record), key=new.key
        )

    @rpc(Role.ADMIN)
    async def ListApiKeys(self, request: Any, context: Any, who: Principal) -> Any:
        keys = await _run(self.bank.accounts.list_api_keys, by=who)
        page, nxt = _page(keys, request.page_size, request.page_token)
        policies = await _run(lambda: [self.bank.accounts.policy(k.id) for k in page])
        return admin_pb2.ListApiKeysResponse(
            api_keys=[contract.api_key_to_pb(k, p) for k, p in zip(page, policies, strict=True)],
            next_page_token=nxt,
        )

    @rpc(Role.ADMIN)
    async def RevokeApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        key_id = contract.id_from_name(request.name, "apiKeys", field="name")
        record = await _run(self.bank.accounts.revoke_api_key, key_id, by=who)
        log.info("API key %d revoked by %s", key_id, who.audit_name)
        self.guard.forget(key_id)
        policy = await _run(self.bank.accounts.policy, key_id)
        return admin_pb2.RevokeApiKeyResponse(api_key=contract.api_key_to_pb(record, policy))

    async def _key_pb(self, key_id: int, who: Principal) -> admin_pb2.ApiKey:
        self.guard.forget(key_id)  # effective at once here, within the key-cache period elsewhere
        keys = await _run(self.bank.accounts.list_api_keys, by=who)
        record = next(k for k in keys if k.id == key_id)
        policy = await _run(self.bank.accounts.policy, key_id)
        return contract.api_key_to_pb(record, policy)

    @rpc(Role.ADMIN)
    async def UpdateApiKeyPolicy(self, request: Any, context: Any, who: Principal) -> Any:
        key_id = contract.id_from_name(request.name, "apiKeys", field="name")
        distances = contract.signal_distances_from_pb(request.max_distances)
        if distances and not request.set_max_distances:
            raise InvalidInput(
                "set set_max_distances to apply max_distances", field="set_max_distances"
            )
        await _run(
            self.bank.accounts.update_key_policy,
            key_id,
            exact_distances=(
                request.exact_distances if request.HasField("exact_distances") else None
            ),
            max_distance=distances if request.set_max_distances else None,
            daily_hashes=(
                request.daily_hash_budget if request.HasField("daily_hash_budget") else None
            ),
            named_in_reports=(
                request.named_in_reports if request.HasField("named_in_reports") else None
            ),
            by=who,
        )
        log.info("API key %d policy changed by %s", key_id, who.audit_name)
        return admin_pb2.UpdateApiKeyPolicyResponse(api_key=await self._key_pb(key_id, who))

    @rpc(Role.ADMIN)
    async def RestoreApiKey(self, request: Any, context: Any, who: Principal) -> Any:
        key_id = contract.id_from_name(request.name, "apiKeys", field="name")
        await _run(self.bank.accounts.restore_api_key, key_id, by=who)
        log.info("API key %d restored by %s", key_id, who.audit_name)
        return admin_pb2.RestoreApiKeyResponse(api_key=await self._key_pb(key_id, who))

    @rpc(Role.ADMIN)
    async def CreateOrganization(self, request: Any, context: Any, who: Principal) -> Any:
        name = contract.display_name_from_pb(request.display_name)
        org = await _run(self.bank.accounts.create_organisation, name, by=who)
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

    # -- the allowlist (admin): values go in, never out

    @rpc(Role.ADMIN)
    async def AddAllowlistEntries(self, request: Any, context: Any, who: Principal) -> Any:
        hashes = contract.allowlist_hashes_from_pb(request.hashes)
        added = await _run(self.bank.allowlist_add, hashes, label=request.label, by=who)
        log.info(
            "%d allowlist entries added (%d held already) by %s",
            added.added,
            added.existing,
            who.audit_name,
        )
        return admin_pb2.AddAllowlistEntriesResponse(
            entries=[contract.allowlist_entry_to_pb(e) for e in added.entries],
            existing_count=added.existing,
        )

    @rpc(Role.ADMIN)
    async def ListAllowlist(self, request: Any, context: Any, who: Principal) -> Any:
        entries = await _run(self.bank.allowlist_entries, by=who)
        page, nxt = _page(entries, request.page_size, request.page_token)
        return admin_pb2.ListAllowlistResponse(
            entries=[contract.allowlist_entry_to_pb(e) for e in page], next_page_token=nxt
        )

    @rpc(Role.ADMIN)
    async def RemoveAllowlistEntry(self, request: Any, context: Any, who: Principal) -> Any:
        entry_id = contract.id_from_name(request.name, "allowlistEntries", field="name")
        entry = await _run(self.bank.allowlist_remove, entry_id, by=who)
        log.info("allowlist entry %d removed by %s", entry_id, who.audit_name)
        return admin_pb2.RemoveAllowlistEntryResponse(entry=contract.allowlist_entry_to_pb(entry))

    @rpc(Role.ADMIN)
    async def SeedAllowlist(self, request: Any, context: Any, who: Principal) -> Any:
        added = await _run(self.bank.allowlist_seed, by=who)
        log.info("allowlist seed added again by %s: %d new", who.audit_name, added.added)
        return admin_pb2.SeedAllowlistResponse(
            added_count=added.added, existing_count=added.existing
        )
