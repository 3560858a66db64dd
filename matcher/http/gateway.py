"""The HTTP/JSON API and the web app, served by ``matcher serve --http-address``.

Design: a gateway in the same process. Each API request becomes one call to this process's own
gRPC server, over a Unix socket in a private folder (mode 0700, so no other user of the host can
reach it), carrying the caller's ``Authorization`` header as gRPC metadata; the reply, or its
status, becomes the HTTP response. Authentication, roles, rate limits, probing detection, the
victim's guess limits, validation and the error table are therefore the gRPC ones by
construction, not a second copy that could drift (what grpc-gateway or Envoy's gRPC-JSON
transcoder do in front of a gRPC service, without the second process). The victim's failed
guesses are counted per client address: the gateway passes the HTTP client's address in
metadata with this process's random ``Guard.gateway_token``, which the gRPC side believes only
with that token (``Guard.client_host``); headers such as ``X-Forwarded-For`` from outside are
never read, so a client cannot choose the address its failures count against.

Two endpoints have no gRPC method and run here, in process, through the same guard and bank:
``GET /api/v1/session`` (who am I: the key's role and organisation, for the practitioner's
sign-in; authenticated and rate-limited by the gRPC server's ``Guard``) and victim
self-service (``POST /api/v1/victim/cases``, only when ``HttpConfig.self_service_org_id`` is
set; validated by ``matcher.contract`` as ``AddItems`` is, limited per client address here).

Why aiohttp: it is asyncio-native, so the HTTP server runs on the very event loop grpc.aio runs
on (no second loop or thread; the gateway's gRPC calls are plain awaits), it is a mature,
well-kept project (aio-libs, since 2014) that bounds request bodies, and it needs no separate
ASGI server. Nothing here reads ``X-Forwarded-*`` or trusts a proxy: put a TLS-terminating proxy
in front and every client has the proxy's address (see the README).

Every response carries the strict Content-Security-Policy (the web app runs no inline script or
style and talks to its own origin only), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``; API responses add ``Cache-Control: no-store``. Errors are
RFC 9457 problem details (``application/problem+json``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter

from matcher import contract
from matcher.errors import InvalidInput, MatcherError, RateLimited, Unauthenticated, Unavailable
from matcher.http import convert
from matcher.http.config import HttpConfig
from matcher.principal import Principal, Role
from matcher.service.auth import CLIENT_ADDRESS, GATEWAY_TOKEN
from matcher.service.limits import Limiter
from matcher.v1 import admin_pb2, cases_pb2, match_pb2

if TYPE_CHECKING:
    from matcher.service.server import Server

__all__ = ["CSP", "ROUTES", "Gateway", "Route", "gateway_socket"]

log = logging.getLogger("matcher.http")

CSP = (
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; "
    "img-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""The Content-Security-Policy of every response: our origin only, no inline code."""

PROBLEM = "application/problem+json"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
    ".webmanifest": "application/manifest+json",
}

# gRPC status -> (HTTP status, problem type slug, title). The usual mapping (as grpc-gateway's).
_HTTP_OF: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid-argument", "The request is not valid"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid-argument", "The request is not valid"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated", "A valid API key is needed"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission-denied", "Not allowed"),
    grpc.StatusCode.NOT_FOUND: (404, "not-found", "Not found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict", "Not possible in the current state"),
    grpc.StatusCode.ABORTED: (409, "conflict", "Not possible in the current state"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "conflict", "Not possible in the current state"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate-limited", "Too many requests"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable", "Not available right now"),
    grpc.StatusCode.CANCELLED: (503, "unavailable", "Not available right now"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout", "The server took too long"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not-implemented", "Not implemented"),
}
_INTERNAL = (500, "internal", "Internal error")


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, str]] | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem details response."""
    body: dict[str, Any] = {
        "type": f"urn:matcher:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if code:
        body["code"] = code
    if errors:
        body["errors"] = errors
    out_headers = dict(headers or {})
    if retry_after is not None:
        seconds = max(1, math.ceil(retry_after))
        body["retry_after"] = seconds
        out_headers["Retry-After"] = str(seconds)
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM,
        headers=out_headers,
    )


def _problem_of(
    code: grpc.StatusCode,
    message: str,
    field: str | None,
    retry_after: float | None,
    fields: Mapping[str, str] | None,
) -> web.Response:
    status, slug, title = _HTTP_OF.get(code, _INTERNAL)
    if status == 500:
        message = "internal error"
    errors = None
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        errors = [{"field": convert.json_field(field or "", fields), "description": message}]
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is None:
        retry_after = 1.0
    return problem(
        status,
        slug,
        title,
        message or title,
        code=code.name,
        errors=errors,
        retry_after=retry_after if status in (429, 503) else None,
    )


def problem_of_exception(
    exc: BaseException, fields: Mapping[str, str] | None = None
) -> web.Response:
    """Problem details for an exception raised here (the gRPC server's table: ``contract``)."""
    code = contract.code_of(exc)
    if code is grpc.StatusCode.INTERNAL or not isinstance(exc, MatcherError):
        log.error("unexpected error in the HTTP gateway", exc_info=exc)
        return _problem_of(grpc.StatusCode.INTERNAL, "", None, None, None)
    field = exc.field if isinstance(exc, InvalidInput) else None
    retry = exc.retry_after if isinstance(exc, RateLimited) else None
    message = exc.reason if isinstance(exc, InvalidInput) else str(exc)
    return _problem_of(code, message, field, retry, fields)


def problem_of_rpc(error: grpc.aio.AioRpcError, fields: Mapping[str, str] | None) -> web.Response:
    """Problem details for a failed gRPC call: its code, message, field violation, RetryInfo."""
    field = None
    retry = None
    for name, value in error.trailing_metadata() or ():
        if name != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            info = error_details_pb2.RetryInfo()
            if detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad) and bad.field_violations:
                field = bad.field_violations[0].field
            elif detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
                retry = info.retry_delay.ToMilliseconds() / 1000
    code = error.code()
    if code not in _HTTP_OF:
        log.error("gRPC call from the HTTP gateway failed: %s", code.name)
    return _problem_of(code, error.details() or "", field, retry, fields)


def client_address(request: web.Request) -> str:
    """The HTTP client's address as gRPC names a peer (``ipv4:1.2.3.4``, ``ipv6:[::1]``), from
    the connection itself: never from a header the client sent."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = peer[0] if isinstance(peer, tuple) and peer else None
    if not isinstance(host, str) or not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's IPv4 client: named as gRPC names it
    return f"ipv6:[{ip}]" if ip.version == 6 else f"ipv4:{ip}"


class _Metadata:
    """Enough of a ``grpc.aio.ServicerContext`` for ``Guard.admit`` (the session endpoint)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP operation: the route table is the server's and the OpenAPI description's."""

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    tag: str
    auth: bool
    """Needs ``Authorization: Bearer <key>``."""
    request: str | None
    """The JSON body's schema (a component name), if it takes one."""
    responses: Mapping[int, str | None]
    """Success statuses and their schemas (None: no body)."""
    errors: tuple[int, ...]
    """Problem statuses it may answer (besides the ones every route may)."""
    fields: Mapping[str, str] | None = None
    """Top-level protobuf fields named otherwise here (``name`` is the path's case number)."""
    query: tuple[str, ...] = ()
    """Query parameters it takes (their schemas: ``openapi.QUERY_PARAMETERS``)."""


_CASE_FIELDS = {"name": "number"}
_VICTIM_FIELDS = {"item_number": "item"}

ROUTES: tuple[Route, ...] = (
    Route(
        method="POST",
        path="/api/v1/match",
        operation_id="match",
        summary="Match images by their hashes",
        description=(
            "Look up a batch of queries (images, each one or more hashes). One result per query, "
            "in order; each lists the enrolled items that matched, best first, with a band "
            "(strong, weak) instead of a distance unless the key was granted distances. Charged "
            "per hash against the key's rate limit. Roles: partner, admin."
        ),
        tag="partners",
        auth=True,
        request="MatchRequest",
        responses={200: "MatchResponse"},
        errors=(400, 401, 403, 429),
    ),
    Route(
        method="POST",
        path="/api/v1/match/report",
        operation_id="reportMatch",
        summary="Report whether a match was right",
        description=(
            "Tell the bank whether a matched item was a re-upload (correct) or a false match "
            "(wrong), optionally with a reason code. Each partner key counts once per item: a "
            "later verdict replaces its earlier one. When enough distinct partners report an "
            "item wrong it is quarantined (stops matching) until its organisation reviews it. "
            "Roles: partner, admin."
        ),
        tag="partners",
        auth=True,
        request="ReportRequest",
        responses={204: None},
        errors=(400, 401, 403, 404, 429),
    ),
    Route(
        method="GET",
        path="/api/v1/session",
        operation_id="getSession",
        summary="Who am I",
        description="The API key's role and organisation (the web app's sign-in checks a key).",
        tag="session",
        auth=True,
        request=None,
        responses={200: "Session"},
        errors=(401, 403, 429),
    ),
    Route(
        method="POST",
        path="/api/v1/cases",
        operation_id="createCase",
        summary="Open a case",
        description=(
            "Open a case for the caller's organisation (admins name one). The response holds the "
            "case number and the withdrawal secret for the victim: shown this once, never again. "
            "Roles: practitioner, admin."
        ),
        tag="cases",
        auth=True,
        request="CreateCaseRequest",
        responses={201: "NewCase"},
        errors=(400, 401, 403, 404, 429),
    ),
    Route(
        method="GET",
        path="/api/v1/cases/{number}",
        operation_id="getCase",
        summary="A case's status and items",
        description=(
            "State, counts and every item ever enrolled (never a hash value). Practitioners of "
            "the case's organisation, admins."
        ),
        tag="cases",
        auth=True,
        request=None,
        responses={200: "Case"},
        errors=(400, 401, 403, 404, 429),
        fields=_CASE_FIELDS,
    ),
    Route(
        method="POST",
        path="/api/v1/cases/{number}/items",
        operation_id="addItems",
        summary="Enroll items into a case",
        description=(
            "Enroll items (images, videos), each with all of its hashes: all of them or none, "
            "acknowledged once durable. An item the case already holds (the same hashes) is not "
            "added again, so a retry is safe. Roles: practitioner, admin."
        ),
        tag="cases",
        auth=True,
        request="AddItemsRequest",
        responses={200: "AddItemsResponse"},
        errors=(400, 401, 403, 404, 409, 429),
        fields=_CASE_FIELDS,
    ),
    Route(
        method="POST",
        path="/api/v1/cases/{number}/withdraw",
        operation_id="withdrawCase",
        summary="Withdraw a case",
        description=(
            "Delete the hashes of every item of the case: no match returns them once this "
            "returns. Roles: practitioner, admin."
        ),
        tag="cases",
        auth=True,
        request=None,
        responses={200: "Case"},
        errors=(400, 401, 403, 404, 429),
        fields=_CASE_FIELDS,
    ),
    Route(
        method="POST",
        path="/api/v1/cases/{number}/items/{item}/withdraw",
        operation_id="withdrawItem",
        summary="Withdraw one item of a case",
        description=(
            "Delete one item's hashes; the case's other items keep matching. Roles: practitioner, "
            "admin."
        ),
        tag="cases",
        auth=True,
        request=None,
        responses={200: "Item"},
        errors=(400, 401, 403, 404, 429),
        fields=_CASE_FIELDS,
    ),
    Route(
        method="GET",
        path="/api/v1/review",
        operation_id="listReviewQueue",
        summary="Quarantined items waiting for review",
        description=(
            "The caller's organisation's quarantined items (an admin's: every organisation's, or "
            "one's with `organization`), the oldest quarantine first, with why, since when and "
            "the verdict counts. Roles: practitioner, admin."
        ),
        tag="cases",
        auth=True,
        request=None,
        responses={200: "ReviewQueue"},
        errors=(400, 401, 403, 404, 429),
        query=("page_size", "page_token", "organization"),
    ),
    Route(
        method="POST",
        path="/api/v1/cases/{number}/items/{item}/review",
        operation_id="reviewItem",
        summary="Restore or withdraw a quarantined item",
        description=(
            "A practitioner's decision on a quarantined item of its organisation: `restore` (it "
            "matches again at once, everywhere; verdicts from before no longer count) or "
            "`withdraw` (as the item's withdrawal). An optional `note` goes into the audit "
            "trail. 409 when the item is not quarantined. Roles: practitioner, admin."
        ),
        tag="cases",
        auth=True,
        request="ReviewRequest",
        responses={200: "Item"},
        errors=(400, 401, 403, 404, 409, 429),
        fields=_CASE_FIELDS,
    ),
    Route(
        method="POST",
        path="/api/v1/victim/status",
        operation_id="victimStatus",
        summary="A case's status, for its victim",
        description=(
            "With the case number and secret (in the body: URLs end up in logs), no API key. A "
            "wrong number and a wrong secret both answer 404; failed attempts are limited per "
            "client address (429 with Retry-After), and slowed per case."
        ),
        tag="victims",
        auth=False,
        request="VictimRequest",
        responses={200: "Case"},
        errors=(400, 404, 429),
        fields=_VICTIM_FIELDS,
    ),
    Route(
        method="POST",
        path="/api/v1/victim/withdraw",
        operation_id="victimWithdraw",
        summary="Withdraw, as the victim",
        description=(
            "The whole case, or one item (its number) when `item` is given. Errors as for the "
            "status."
        ),
        tag="victims",
        auth=False,
        request="VictimWithdrawRequest",
        responses={200: "VictimWithdrawResponse"},
        errors=(400, 404, 429),
        fields=_VICTIM_FIELDS,
    ),
    Route(
        method="POST",
        path="/api/v1/victim/cases",
        operation_id="victimOpenCase",
        summary="Open a case as a victim",
        description=(
            "Self-service, only where the operator turned it on (`--self-service-org`; 404 "
            "otherwise): the case belongs to that organisation. Enrolls the items and answers the "
            "case number and secret, shown this once. Limited per client address."
        ),
        tag="victims",
        auth=False,
        request="AddItemsRequest",
        responses={201: "NewCase"},
        errors=(400, 404, 429),
    ),
    Route(
        method="GET",
        path="/api/v1/openapi.json",
        operation_id="getOpenApi",
        summary="This description",
        description="The OpenAPI 3 description of this API.",
        tag="meta",
        auth=False,
        request=None,
        responses={200: "OpenApi"},
        errors=(),
    ),
    Route(
        method="GET",
        path="/api/v1/features",
        operation_id="getFeatures",
        summary="What this server offers",
        description=(
            "Whether victims may open cases themselves here (`self_service`): the web app shows "
            "that door only when it is open."
        ),
        tag="meta",
        auth=False,
        request=None,
        responses={200: "Features"},
        errors=(),
    ),
    Route(
        method="GET",
        path="/healthz",
        operation_id="liveness",
        summary="Liveness",
        description="200 while the process answers at all.",
        tag="meta",
        auth=False,
        request=None,
        responses={200: "Health"},
        errors=(),
    ),
    Route(
        method="GET",
        path="/readyz",
        operation_id="readiness",
        summary="Readiness",
        description=(
            "200 once the index is loaded and caught up with the store (the gRPC health service's "
            "readiness), 503 otherwise."
        ),
        tag="meta",
        auth=False,
        request=None,
        responses={200: "Health"},
        errors=(503,),
    ),
)


def _api_paths() -> list[tuple[re.Pattern[str], list[str]]]:
    methods: dict[str, list[str]] = {}
    for route in ROUTES:
        methods.setdefault(route.path, []).append(route.method)
    return [
        (re.compile(re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(path))), sorted(m))
        for path, m in methods.items()
    ]


_API_PATHS = _api_paths()
"""The API's paths as patterns: a GET on a POST endpoint is a 405, not the web root's 404."""


def gateway_socket() -> tuple[Path, str]:
    """A private folder (mode 0700) and the gRPC target of a Unix socket in it."""
    folder = Path(tempfile.mkdtemp(prefix="matcher-gw-"))
    os.chmod(folder, 0o700)
    return folder, f"unix:{folder / 'grpc.sock'}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """The running HTTP server of one ``matcher.service.Server`` (``await Gateway.start``)."""

    def __init__(self, server: Server, config: HttpConfig, target: str) -> None:
        self.server = server
        self.config = config
        self._token = server.guard.gateway_token
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", server.config.max_message_bytes),
                ("grpc.max_send_message_length", server.config.max_message_bytes),
            ],
        )
        self._methods: dict[str, Any] = {}
        for module in (match_pb2, cases_pb2, admin_pb2):
            [service] = module.DESCRIPTOR.services_by_name.values()
            for method in service.methods:
                if method.client_streaming:
                    continue
                request = getattr(module, method.input_type.name)
                response = getattr(module, method.output_type.name)
                self._methods[method.name] = self._channel.unary_unary(
                    f"/{service.full_name}/{method.name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                )
        self._health = health_pb2_grpc.HealthStub(self._channel)
        window = config.self_service_window_seconds
        self._self_service = Limiter(
            rate=config.self_service_cases / window, burst=config.self_service_cases
        )
        self._self_service_all = Limiter(
            rate=config.self_service_overall / window, burst=config.self_service_overall
        )
        self._web_root = config.web_root.resolve()
        # Labels: an operation id of the route table ("web" for the web root, "other" for no
        # route) and a status: few, fixed, never a case number or a path.
        self._requests = Counter(
            "matcher_http_requests",
            "HTTP requests answered, by operation and status",
            ["operation", "status"],
            registry=server.metrics.registry,
        )
        self._counted: dict[tuple[str, int], Any] = {}
        self.app = self._app()
        self._runner: web.AppRunner | None = None
        self.port = 0
        from matcher.http.openapi import document

        self._openapi = json.dumps(document(ROUTES)).encode()

    # -- the application

    def _app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[self._errors]
        )
        handlers: dict[str, Handler] = {
            "match": self.match,
            "reportMatch": self.report_match,
            "getSession": self.session,
            "createCase": self.create_case,
            "getCase": self.get_case,
            "addItems": self.add_items,
            "withdrawCase": self.withdraw_case,
            "withdrawItem": self.withdraw_item,
            "listReviewQueue": self.review_queue,
            "reviewItem": self.review_item,
            "victimStatus": self.victim_status,
            "victimWithdraw": self.victim_withdraw,
            "victimOpenCase": self.victim_open_case,
            "getOpenApi": self.openapi,
            "getFeatures": self.features,
            "liveness": self.liveness,
            "readiness": self.readiness,
        }
        for route in ROUTES:
            handler, name = handlers[route.operation_id], route.operation_id
            if route.method == "GET":
                app.router.add_get(route.path, handler, name=name)
            else:
                app.router.add_route(route.method, route.path, handler, name=name)
        app.router.add_get("/{path:.*}", self.static, name="web")
        app.on_response_prepare.append(self._headers)
        return app

    @classmethod
    async def start(cls, server: Server, config: HttpConfig, target: str) -> Gateway:
        self = cls(server, config, target)
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=server.config.grace_seconds
        )
        await self._runner.setup()
        host, _, port = config.address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, int(port)), family=family)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        """Stop taking requests, let in-flight ones finish (``grace_seconds``), close."""
        if self._runner is not None:
            await self._runner.cleanup()
        await self._channel.close()

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h["Content-Security-Policy"] = CSP
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        h["Server"] = "matcher"  # not the library and its version
        path = request.path
        if path.startswith("/api/") or path in ("/healthz", "/readyz"):
            h["Cache-Control"] = "no-store"
        else:
            h.setdefault("Cache-Control", "no-cache")

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every error as problem details (``_problems``), and every request counted by
        operation and status in ``matcher_http_requests_total``."""
        response = await self._problems(request, handler)
        route = request.match_info.route.name if request.match_info.route else None
        key = (route or "other", response.status)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self._requests.labels(key[0], str(key[1]))
        child.inc()
        return response

    async def _problems(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The handler's response; errors as problem details, including the router's 404 and
        405 and aiohttp's 413; anything unexpected as a 500 whose text stays in the log."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            try:
                phrase = HTTPStatus(exc.status).phrase
            except ValueError:
                phrase = "Error"
            slug = {
                404: "not-found",
                405: "method-not-allowed",
                413: "too-large",
                415: "unsupported-media-type",
            }.get(exc.status, "http-error")
            detail = {
                404: "no such page or endpoint",
                405: f"this endpoint does not take {request.method}",
                413: f"the body is larger than {self.config.max_body_bytes:,} bytes",
                415: "send the body as JSON, with Content-Type: application/json",
            }.get(exc.status, phrase)
            return problem(exc.status, slug, phrase, detail, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return problem_of_exception(exc)

    # -- plumbing

    async def _body(self, request: web.Request, *, optional: bool = False) -> Any:
        """The JSON body. A body must say ``Content-Type: application/json``: a cross-site
        form cannot send that without the browser asking first (CORS), and we never allow it."""
        raw = await request.read()
        if not raw.strip():
            if optional:
                return {}
            raise InvalidInput("a JSON body is required", field="")
        kind = request.content_type
        if kind != "application/json" and not (
            kind.startswith("application/") and kind.endswith("+json")
        ):
            raise web.HTTPUnsupportedMediaType()
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise InvalidInput("the body is not valid JSON (UTF-8)", field="") from None

    @staticmethod
    def _query(request: web.Request, known: set[str]) -> dict[str, str]:
        """The query parameters, each known and given once (as a body's fields are checked)."""
        out: dict[str, str] = {}
        for name, value in request.query.items():
            shown = name[:64]
            if name not in known:
                raise InvalidInput(f"unknown query parameter {shown!r}", field=shown)
            if name in out:
                raise InvalidInput(f"{shown} is given more than once", field=shown)
            out[name] = convert.text(value, name)
        return out

    def _metadata(self, request: web.Request) -> tuple[tuple[str, str], ...]:
        metadata = [(CLIENT_ADDRESS, client_address(request)), (GATEWAY_TOKEN, self._token)]
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            printable = authorization.isascii() and authorization.isprintable()
            if not printable or len(authorization) > 1024:
                raise Unauthenticated("malformed Authorization header: send 'Bearer <key>'")
            metadata.append(("authorization", authorization))
        return tuple(metadata)

    async def _call(self, request: web.Request, method: str, message: Any) -> Any:
        """Call the gRPC method with the caller's credentials and address."""
        return await self._methods[method](
            message, metadata=self._metadata(request), timeout=self.config.call_timeout_seconds
        )

    async def _json_call(
        self,
        request: web.Request,
        method: str,
        message: Any,
        render: Callable[[Any], Any],
        *,
        fields: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> web.StreamResponse:
        try:
            reply = await self._call(request, method, message)
        except grpc.aio.AioRpcError as error:
            return problem_of_rpc(error, fields)
        body = render(reply)
        if body is None:
            return web.Response(status=204)
        return web.json_response(body, status=status)

    # -- handlers: partners

    async def match(self, request: web.Request) -> web.StreamResponse:
        message = convert.match_request(await self._body(request))
        return await self._json_call(request, "Match", message, convert.match_response)

    async def report_match(self, request: web.Request) -> web.StreamResponse:
        message = convert.report_request(await self._body(request))
        return await self._json_call(request, "ReportMatch", message, lambda _: None)

    # -- practitioners

    async def session(self, request: web.Request) -> web.StreamResponse:
        guard = self.server.guard
        who: Principal = guard.admit(
            _Metadata(self._metadata(request)),  # type: ignore[arg-type]
            (Role.PARTNER, Role.PRACTITIONER, Role.ADMIN),
            None,
            None,
        )
        body: dict[str, Any] = {"role": str(who.role), "key_name": who.name}
        if who.org_id is not None:
            org = await asyncio.to_thread(
                self.server.bank.accounts.get_organisation,
                who.org_id,
                by=Principal.operator("http"),
            )
            body["organization"] = {
                "name": contract.organization_name(org.id),
                "display_name": org.name,
            }
        return web.json_response(body)

    async def create_case(self, request: web.Request) -> web.StreamResponse:
        body = convert.object_body(await self._body(request, optional=True), {"organization"})
        message = cases_pb2.CreateCaseRequest(
            organization=convert.text(body.get("organization", ""), "organization")
        )
        return await self._json_call(
            request,
            "CreateCase",
            message,
            lambda r: {
                "case_number": r.case.case_number,
                "secret": r.withdrawal_secret,
                "case": convert.case_json(r.case, items=True),
            },
            status=201,
        )

    def _case_name(self, request: web.Request) -> str:
        number = convert.text(request.match_info["number"], "number")
        return contract.case_name(number)

    async def get_case(self, request: web.Request) -> web.StreamResponse:
        message = cases_pb2.GetCaseRequest(name=self._case_name(request))
        return await self._json_call(
            request,
            "GetCase",
            message,
            lambda r: convert.case_json(r.case, items=True, practitioner=True),
            fields=_CASE_FIELDS,
        )

    async def add_items(self, request: web.Request) -> web.StreamResponse:
        name = self._case_name(request)
        message = cases_pb2.AddItemsRequest(
            name=name, items=convert.new_items(await self._body(request))
        )
        return await self._json_call(
            request, "AddItems", message, convert.add_items_response, fields=_CASE_FIELDS
        )

    async def withdraw_case(self, request: web.Request) -> web.StreamResponse:
        message = cases_pb2.WithdrawCaseRequest(name=self._case_name(request))
        return await self._json_call(
            request,
            "WithdrawCase",
            message,
            lambda r: convert.case_json(r.case),
            fields=_CASE_FIELDS,
        )

    def _item_name(self, request: web.Request) -> str:
        text = request.match_info["item"]
        if not (text.isascii() and text.isdigit() and 0 < len(text) <= 9 and int(text) > 0):
            raise InvalidInput("the item is its number in the case: 1, 2, ...", field="item")
        return f"{self._case_name(request)}/items/{int(text)}"

    async def withdraw_item(self, request: web.Request) -> web.StreamResponse:
        message = cases_pb2.WithdrawItemRequest(name=self._item_name(request))
        return await self._json_call(
            request,
            "WithdrawItem",
            message,
            lambda r: convert.item_json(r.item, practitioner=True),
            fields=_CASE_FIELDS,
        )

    async def review_queue(self, request: web.Request) -> web.StreamResponse:
        query = self._query(request, {"page_size", "page_token", "organization"})
        message = cases_pb2.ListReviewQueueRequest(
            page_token=query.get("page_token", ""), organization=query.get("organization", "")
        )
        if "page_size" in query:
            size = query["page_size"]
            if not (size.isascii() and size.isdigit() and len(size) <= 9):
                raise InvalidInput("page_size must be a whole number", field="page_size")
            message.page_size = int(size)
        return await self._json_call(
            request, "ListReviewQueue", message, convert.review_queue_response
        )

    async def review_item(self, request: web.Request) -> web.StreamResponse:
        name = self._item_name(request)
        message = convert.review_request(await self._body(request), name)
        return await self._json_call(
            request,
            "ReviewItem",
            message,
            lambda r: convert.item_json(r.item, practitioner=True),
            fields=_CASE_FIELDS,
        )

    # -- victims

    def _secret(self, body: dict[str, Any]) -> tuple[str, str]:
        return (
            convert.text(body["case_number"], "case_number"),
            convert.text(body["secret"], "secret"),
        )

    async def victim_status(self, request: web.Request) -> web.StreamResponse:
        body = convert.object_body(
            await self._body(request), {"case_number", "secret"}, ("case_number", "secret")
        )
        number, secret = self._secret(body)
        message = cases_pb2.GetCaseWithSecretRequest(case_number=number, secret=secret)
        return await self._json_call(
            request,
            "GetCaseWithSecret",
            message,
            lambda r: convert.case_json(r.case, items=True),
            fields=_VICTIM_FIELDS,
        )

    async def victim_withdraw(self, request: web.Request) -> web.StreamResponse:
        body = convert.object_body(
            await self._body(request),
            {"case_number", "secret", "item"},
            ("case_number", "secret"),
        )
        number, secret = self._secret(body)
        if "item" in body:
            message: Any = cases_pb2.WithdrawItemWithSecretRequest(
                case_number=number,
                secret=secret,
                item_number=convert.integer(body["item"], "item"),
            )
            return await self._json_call(
                request,
                "WithdrawItemWithSecret",
                message,
                lambda r: {"item": convert.item_json(r.item)},
                fields=_VICTIM_FIELDS,
            )
        message = cases_pb2.WithdrawCaseWithSecretRequest(case_number=number, secret=secret)
        return await self._json_call(
            request,
            "WithdrawCaseWithSecret",
            message,
            lambda r: {"case": convert.case_json(r.case)},
            fields=_VICTIM_FIELDS,
        )

    async def victim_open_case(self, request: web.Request) -> web.StreamResponse:
        org_id = self.config.self_service_org_id
        if org_id is None:
            raise web.HTTPNotFound()
        limits = self.server.config.limits
        items = contract.items_from_pb(
            convert.new_items(await self._body(request)),
            max_items=limits.max_items,
            max_hashes=limits.max_enroll_hashes,
        )
        if not self.server.bank.ready:  # before the limit: a starting server costs nothing
            raise Unavailable("the service is starting: try again in a minute")
        address = client_address(request)[:64]
        try:
            self._self_service.take(address)
            self._self_service_all.take("all")
        except RateLimited as exc:
            wait = max(1, round(exc.retry_after))
            raise RateLimited(
                f"too many cases opened from here: try again in {wait} s",
                retry_after=exc.retry_after,
            ) from None
        bank = self.server.bank
        who = Principal("self-service", Role.PRACTITIONER, org_id=org_id)
        new = await asyncio.to_thread(bank.create_case, by=who)
        await asyncio.to_thread(bank.enroll, new.number, items, by=who)
        status = await asyncio.to_thread(bank.case_status, new.number, by=who)
        log.info("case opened by self-service (%d items)", len(items))
        case = contract.case_to_pb(status, items=True)
        return web.json_response(
            {
                "case_number": new.number,
                "secret": new.secret,
                "case": convert.case_json(case, items=True),
            },
            status=201,
        )

    # -- meta

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._openapi, content_type="application/json")

    async def features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"self_service": self.config.self_service_org_id is not None})

    async def liveness(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "SERVING"})

    async def readiness(self, request: web.Request) -> web.StreamResponse:
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5.0)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        if serving:
            return web.json_response({"status": "SERVING"})
        return problem(
            503,
            "unavailable",
            "Not ready",
            "not ready: loading the index, behind the store, or shutting down",
            code="UNAVAILABLE",
            retry_after=1.0,
        )

    # -- the web app

    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of the web root (``index.html`` for a folder); 404 for anything outside."""
        relative = request.match_info["path"]
        if relative == "api" or relative.startswith("api/"):
            for pattern, methods in _API_PATHS:
                if pattern.fullmatch(request.path):
                    raise web.HTTPMethodNotAllowed(request.method, methods)
            raise web.HTTPNotFound()
        parts = [p for p in relative.split("/") if p]
        if any(p in (".", "..") or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            raise web.HTTPNotFound()
        path = self._web_root.joinpath(*parts)
        try:
            if path.is_dir():
                path = path / "index.html"
            resolved = path.resolve()
            found = resolved.is_relative_to(self._web_root) and resolved.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise web.HTTPNotFound()
        kind = _CONTENT_TYPES.get(resolved.suffix.lower(), "application/octet-stream")
        return web.FileResponse(resolved, headers={"Content-Type": kind})


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def remove_socket_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
