"""Who is calling, may they, and how often: the guard around every RPC.

Every RPC method of our servicers is wrapped by ``rpc`` or ``stream`` (an interceptor applied
per method: each method declares its roles next to its code, and it costs less per call than a
server-wide ``grpc.aio.ServerInterceptor``). The wrapper uses the ``Guard`` of the servicer it
runs on (``servicer.guard``: one per server). In order, it:

1. authenticates the API key from ``authorization: Bearer <key>`` metadata (not for the victim's
   withdrawal, which proves a case number and secret instead);
2. checks the caller's role against the method's roles;
3. takes tokens from the caller's rate-limit bucket;
4. runs the handler, and turns any exception into a status (``status.to_status``);
5. counts the call and its latency in the metrics.

API keys are looked up in the store (as SHA-256 digests), with their policy, and the answer is
cached for ``key_cache_seconds``: a revoked or suspended key stops working within that time
(streams re-check their key at least that often, ``Guard.recheck``).
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from matcher.bank import Accounts
from matcher.errors import InvalidInput, PermissionDenied, Unauthenticated
from matcher.principal import Principal, Role
from matcher.records import KeyPolicy
from matcher.service.limits import Limiter
from matcher.service.metrics import Metrics
from matcher.service.status import code_of, to_status

__all__ = [
    "CLIENT_ADDRESS",
    "GATEWAY_TOKEN",
    "PUBLIC",
    "Guard",
    "Malformed",
    "peer_host",
    "rpc",
    "safe_deserializer",
    "stream",
]

log = logging.getLogger("matcher.service")

PUBLIC = "public"
"""Marker for methods that need no API key (the victim's withdrawal)."""

CLIENT_ADDRESS = "x-matcher-client-address"
GATEWAY_TOKEN = "x-matcher-gateway-token"
"""Metadata the process's own HTTP gateway (``matcher.http``) sends with each call: the HTTP
client's real address, and this process's random gateway token. The address is believed only
with the token (``Guard.client_host``); from anyone else it is ignored, so a caller cannot
pick the address its failed victim guesses are counted against."""


class Malformed:
    """What a request that does not parse becomes (``safe_deserializer``): the handler's
    wrapper refuses it as INVALID_ARGUMENT, counted like every other refusal, instead of gRPC
    answering UNKNOWN with the parser's exception text."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self, field: str = "request") -> InvalidInput:
        return InvalidInput(
            f"the request is not a valid {self.type_name} message (truncated or corrupt bytes, "
            "or a string that is not UTF-8)",
            field=field,
        )


def safe_deserializer(message_class: Any) -> Callable[[bytes], Any]:
    """``message_class.FromString`` that returns a ``Malformed`` instead of raising."""
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, and whatever else a hostile byte string provokes
            return Malformed(name)

    return deserialize


def peer_host(context: grpc.aio.ServicerContext) -> str:
    """The caller's address without its port (``ipv4:127.0.0.1:5123`` -> ``ipv4:127.0.0.1``)."""
    peer = context.peer() or "unknown"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


@dataclass(slots=True)
class _Cached:
    principal: Principal | None
    until: float
    policy: KeyPolicy


_SUSPENDED = (
    "this key is suspended: its queries looked like probing for stored hashes; "
    "an admin must restore it (matcher keys restore)"
)


class Guard:
    """Authentication, authorisation, rate limits, error mapping and metrics for RPC methods."""

    def __init__(
        self,
        accounts: Accounts,
        metrics: Metrics,
        *,
        limiter: Limiter,
        key_cache_seconds: float = 2.0,
    ) -> None:
        self._accounts = accounts
        self.metrics = metrics
        self._limiter = limiter
        self._key_cache_seconds = key_cache_seconds
        self.key_cache_seconds = key_cache_seconds
        """How long a key's lookup is trusted: a revoked key works at most this long."""
        self._keys: dict[str, _Cached] = {}
        self._policies: dict[int, KeyPolicy] = {}
        self.gateway_token = secrets.token_urlsafe(32)
        """Random per process, never logged nor stored: only the in-process HTTP gateway
        knows it, so only its calls may say which client address they come from."""

    def client_host(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's address without its port: the peer's, or, for a call from this
        process's HTTP gateway (proved by ``gateway_token``), the HTTP client's address the
        gateway passed on. Per-address limits (the victim's failed guesses) use this, so that
        every HTTP client does not collapse onto the gateway's loopback address."""
        metadata = context.invocation_metadata() or ()
        token = address = None
        for name, value in metadata:
            if name == GATEWAY_TOKEN:
                token = str(value)
            elif name == CLIENT_ADDRESS:
                address = str(value)
        if (
            token is not None
            and address
            and hmac.compare_digest(token.encode(), self.gateway_token.encode())
        ):
            return address
        return peer_host(context)

    def authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        """The principal behind the call's API key, or ``Unauthenticated``."""
        key = None
        for name, sent in context.invocation_metadata() or ():
            if name == "authorization":
                scheme, _, value = str(sent).partition(" ")
                if scheme.lower() == "bearer" and value.strip():
                    key = value.strip()
                break
        if key is None:
            raise Unauthenticated("missing API key: send 'authorization: Bearer <key>'")
        now = time.monotonic()
        cached = self._keys.get(key)
        if cached is None or cached.until < now:
            if len(key) > 200:  # ours are ~50 characters: keep nothing longer
                raise Unauthenticated("unknown or revoked API key")
            try:
                principal: Principal | None = self._accounts.authenticate(key)
            except Unauthenticated:
                principal = None
            policy = KeyPolicy()
            if principal is not None and principal.key_id is not None:
                policy = self._accounts.policy(principal.key_id)
            if len(self._keys) > 10_000:  # many wrong keys: don't let the cache grow unbounded
                self._keys.clear()
                self._policies.clear()
            cached = self._keys[key] = _Cached(principal, now + self._key_cache_seconds, policy)
            if principal is not None and principal.key_id is not None:
                self._policies[principal.key_id] = policy
        if cached.principal is None:
            raise Unauthenticated("unknown or revoked API key")
        if cached.policy.suspended:
            raise PermissionDenied(_SUSPENDED)
        return cached.principal

    def policy(self, principal: Principal) -> KeyPolicy:
        """The cached policy of an authenticated key (the default one if none is cached)."""
        if principal.key_id is None:
            return KeyPolicy()
        return self._policies.get(principal.key_id, KeyPolicy())

    def forget(self, key_id: int) -> None:
        """Drop a key from the cache (suspended or changed here: effective at once)."""
        self._keys = {
            k: c
            for k, c in self._keys.items()
            if c.principal is None or c.principal.key_id != key_id
        }
        self._policies.pop(key_id, None)

    def recheck(self, context: grpc.aio.ServicerContext) -> Principal:
        """Authenticate a stream's key again (cached): revoked or suspended keys end there."""
        return self.authenticate(context)

    def admit_more(self, principal: Principal, cost: int) -> None:
        """Take ``cost`` more tokens from the principal's bucket (streams, per message)."""
        self._limiter.take(principal.key_id, cost)

    def admit(
        self,
        context: grpc.aio.ServicerContext,
        roles: tuple[Role | str, ...],
        cost: Callable[[Any], int] | None,
        request: Any,
    ) -> Principal:
        principal = self.authenticate(context)
        if not principal.has(*(r for r in roles if isinstance(r, Role))):
            raise PermissionDenied(
                f"this call needs role {' or '.join(str(r) for r in roles)}, "
                f"the key has role {principal.role}"
            )
        self._limiter.take(principal.key_id, cost(request) if cost else 1)
        return principal

    @staticmethod
    def log_failure(method: str, code: grpc.StatusCode, exc: BaseException) -> None:
        if code is grpc.StatusCode.INTERNAL:
            # The traceback names code lines, not values; the message stays in the log only.
            log.error("unexpected error in %s", method, exc_info=exc)
        elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED):
            log.info("%s refused: %s", method, code.name)
        else:
            log.debug("%s failed: %s", method, code.name)


def rpc(
    *roles: Role | str, cost: Callable[[Any], int] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a unary servicer method written as ``handler(self, request, context, who)``.

    ``roles`` lists who may call it (``PUBLIC``: no key, ``who`` is None); ``cost(request)`` is
    how many rate-limit tokens a request takes (default 1).
    """
    public = PUBLIC in roles

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapper(servicer: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            guard: Guard = servicer.guard
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if isinstance(request, Malformed):
                    raise request.error()
                who = None if public else guard.admit(context, roles, cost, request)
                return await handler(servicer, request, context, who)
            except Exception as exc:
                code = code_of(exc)
                guard.log_failure(method, code, exc)
                await context.abort_with_status(to_status(exc))
            finally:
                guard.metrics.done(method, code.name, time.perf_counter() - started)

        return wrapper

    return decorate


def stream(*roles: Role) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a bidirectional streaming method ``handler(self, requests, context, who)``.

    The key and role are checked once, at the start; the handler takes rate-limit tokens per
    message with ``Guard.admit_more``.
    """

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapper(servicer: Any, requests: Any, context: grpc.aio.ServicerContext) -> Any:
            guard: Guard = servicer.guard
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                who = guard.admit(context, roles, None, None)
                async for response in handler(servicer, requests, context, who):
                    yield response
            except Exception as exc:
                code = code_of(exc)
                guard.log_failure(method, code, exc)
                await context.abort_with_status(to_status(exc))
            finally:
                guard.metrics.done(method, code.name, time.perf_counter() - started)

        return wrapper

    return decorate
