"""The one place that builds the server: servicers, options, health, reflection, metrics, TLS,
graceful stop.

Start-up order: the port opens at once with health NOT_SERVING (load balancers and the tests
can watch it), the bank compiles its kernels (``warm_up``) and loads its index in a background
thread, then health turns SERVING. Nothing slow runs before the port opens.
Once loaded, the bank's follower follows the store's change log in the background (replicas
on one PostgreSQL see each other's writes within a fraction of a second), and health follows
it: SERVING only while the follower is caught up (``IndexFollower.healthy``), NOT_SERVING when
it falls behind or loses the store; that is the readiness probe (service ``""``). The service
name ``liveness`` reports SERVING as long as the process answers at all: the liveness probe,
which must not restart a replica that is only reloading or waiting for its database.
Shutdown (SIGTERM/SIGINT, or ``Server.stop``): health turns NOT_SERVING first so balancers move
traffic away, in-flight calls get ``grace`` seconds to finish, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from matcher.bank import Bank
from matcher.bank.flood import FloodRule
from matcher.bank.matching import DEFAULT_QUARANTINE_AFTER
from matcher.http.config import HttpConfig
from matcher.principal import Principal
from matcher.service.auth import Guard, safe_deserializer
from matcher.service.limits import Limiter
from matcher.service.metrics import Metrics
from matcher.service.servicer import AdminServicer, CaseServicer, MatchServicer, ServiceLimits
from matcher.v1 import (
    admin_pb2,
    cases_pb2,
    match_pb2,
)

__all__ = ["LIVENESS", "Server", "ServerConfig", "TlsConfig", "configure_logging", "serve"]

log = logging.getLogger("matcher.service")

LIVENESS = "liveness"
"""The health service name that answers SERVING while the process is up (liveness probe)."""

SERVICE_NAMES = (
    match_pb2.DESCRIPTOR.services_by_name["MatchService"].full_name,
    cases_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsConfig:
    """Server certificate and key (PEM files); with ``client_ca``, clients must present a
    certificate signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    """How to run the server. Every field has a production-minded default."""

    address: str = "127.0.0.1:50051"
    metrics_address: str | None = "127.0.0.1:9464"
    """``host:port`` for Prometheus ``/metrics``; None turns it off; port 0 picks one."""
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    rate: float = 20_000.0
    """Query hashes per second per API key, sustained (a query of 11 hashes costs 11)..."""
    burst: float = 40_000.0
    """...and in a burst."""
    key_cache_seconds: float = 2.0
    max_message_bytes: int = 8 * 1024 * 1024
    grace_seconds: float = 10.0
    """In-flight calls get this long to finish once the server stops taking new ones..."""
    drain_seconds: float = 1.0
    """...which happens this long after health turns NOT_SERVING, so that load balancers
    watching health move new traffic away before it is refused."""
    tls: TlsConfig | None = None
    # Keepalive, explicit rather than inherited: ping idle clients every minute, drop a peer
    # that does not answer in 20 s, and refuse client pings more often than every 10 s.
    keepalive_time_ms: int = 60_000
    keepalive_timeout_ms: int = 20_000
    min_client_ping_interval_ms: int = 10_000
    max_connection_idle_ms: int = 30 * 60_000
    follow_poll_seconds: float = 0.25
    """The follow loop reads the change log at least this often (a notification wakes it
    sooner on PostgreSQL)."""
    keep_log_seconds: float | None = 3600.0
    """Seconds of change log the follow loop keeps when it trims (None: never trim); a
    replica down for longer reloads from a snapshot."""
    stale_after_seconds: float = 5.0
    """Readiness turns NOT_SERVING when the follower has not reached the log's end for this
    long (the store is unreachable, say)."""
    quarantine_after: int = DEFAULT_QUARANTINE_AFTER
    """Distinct partners whose current "wrong" verdicts quarantine an item (0: never)."""
    flood: FloodRule = field(default_factory=FloodRule)
    """Flood control's rule and flush period (``matcher.bank.flood``)."""
    http: HttpConfig | None = None
    """The HTTP/JSON API and the web app beside gRPC (``matcher.http``); None: off."""


def _handlers(module: Any, servicer: Any) -> grpc.GenericRpcHandler:
    """The handlers of one service, as the generated ``add_*_to_server`` makes them, but with
    deserializers that never raise: a request that does not parse reaches the guard as a
    ``Malformed`` and is refused as INVALID_ARGUMENT (and counted), not UNKNOWN."""
    [service] = module.DESCRIPTOR.services_by_name.values()
    handlers = {}
    for method in service.methods:
        request = getattr(module, method.input_type.name)
        response = getattr(module, method.output_type.name)
        make = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=safe_deserializer(request),
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class Server:
    """A running matcher gRPC server over a bank. Use ``await Server.start(bank, config)``."""

    def __init__(self, bank: Bank, config: ServerConfig) -> None:
        self.bank = bank
        self.config = config
        bank.quarantine_after = config.quarantine_after
        bank.flood.rule = config.flood
        self.metrics = Metrics(bank)
        self.health = health.aio.HealthServicer()
        limiter = Limiter(rate=config.rate, burst=config.burst)
        self.guard = Guard(
            bank.accounts, self.metrics, limiter=limiter, key_cache_seconds=config.key_cache_seconds
        )
        self._server = grpc.aio.server(options=self._options())
        args = (bank, self.guard, self.metrics, config.limits)
        for module, servicer in (
            (match_pb2, MatchServicer(*args)),
            (cases_pb2, CaseServicer(*args)),
            (admin_pb2, AdminServicer(*args)),
        ):
            self._server.add_generic_rpc_handlers((_handlers(module, servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = self._bind()
        self.metrics_port: int | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self.http: Any = None
        """The running HTTP gateway (``matcher.http.gateway.Gateway``), when configured."""
        self.http_port: int | None = None
        self._gateway_folder: Path | None = None
        self._gateway_target = ""
        if config.http is not None:
            # The HTTP gateway's own way in: a Unix socket in a folder only this user can
            # enter, without TLS (it never leaves the host), whatever the public port uses.
            from matcher.http.gateway import gateway_socket

            self._gateway_folder, self._gateway_target = gateway_socket()
            if self._server.add_insecure_port(self._gateway_target) == 0:
                raise OSError(f"cannot listen on {self._gateway_target}")

    def _options(self) -> list[tuple[str, int]]:
        c = self.config
        return [
            ("grpc.max_receive_message_length", c.max_message_bytes),
            ("grpc.max_send_message_length", c.max_message_bytes),
            ("grpc.keepalive_time_ms", c.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", c.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", c.min_client_ping_interval_ms),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_connection_idle_ms", c.max_connection_idle_ms),
            ("grpc.so_reuseport", 0),
        ]

    def _bind(self) -> int:
        tls = self.config.tls
        if tls is None:
            port = self._server.add_insecure_port(self.config.address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None,
            )
            port = self._server.add_secure_port(self.config.address, credentials)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.address}")
        return port

    @classmethod
    async def start(
        cls, bank: Bank, config: ServerConfig | None = None, *, load: bool = True
    ) -> Server:
        """Open the port (health NOT_SERVING), start loading the index, return at once.

        With ``load=False`` the caller loads the bank itself (``bank.load()``, e.g. after a
        restore); health turns SERVING when it is ready either way.
        """
        self = cls(bank, config or ServerConfig())
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._server.start()
        if self.config.http is not None:
            from matcher.http.gateway import Gateway

            self.http = await Gateway.start(self, self.config.http, self._gateway_target)
            self.http_port = self.http.port
        if self.config.metrics_address:
            host, _, port = self.config.metrics_address.rpartition(":")
            self.metrics_port = self.metrics.serve(int(port), host or "127.0.0.1")
        if load and not bank.ready:
            bank.start_loading(_log_progress())
        self._ready_task = asyncio.create_task(self._serve_when_ready())
        return self

    async def _serve_when_ready(self) -> None:
        await asyncio.to_thread(self.bank.wait_ready)
        follower = self.bank.follower
        follower.stale_after = self.config.stale_after_seconds
        follower.start_following(
            poll=self.config.follow_poll_seconds, keep_log=self.config.keep_log_seconds
        )
        self.bank.flood.start()
        await self._set_health(True)
        stats = self.bank.stats(by=Principal.operator("server"))
        log.info(
            "serving: %s items, %s hashes indexed in %.1f s",
            f"{stats.items:,}",
            f"{sum(stats.indexed.values()):,}",
            stats.load_seconds or 0.0,
        )
        serving = True
        while True:
            await asyncio.sleep(min(0.25, self.config.follow_poll_seconds))
            healthy = follower.healthy
            if healthy != serving:
                serving = healthy
                await self._set_health(healthy)
                lag = follower.lag_seconds or 0.0
                if healthy:
                    log.info("caught up with the store again: SERVING")
                else:
                    log.warning("%.1f s behind the store's change log: NOT_SERVING", lag)

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None, *, drain: float | None = None) -> None:
        """Health NOT_SERVING; after ``drain`` s refuse new calls, give in-flight ones ``grace``."""
        await self.health.enter_graceful_shutdown()
        if self._ready_task is not None:
            self._ready_task.cancel()
        await asyncio.to_thread(self.bank.follower.stop_following)
        await asyncio.to_thread(self.bank.flood.stop)
        await asyncio.sleep(self.config.drain_seconds if drain is None else drain)
        if self.http is not None:
            # First, while gRPC still answers the requests in flight through the gateway.
            await self.http.stop()
        await self._server.stop(self.config.grace_seconds if grace is None else grace)
        self.metrics.close()
        if self._gateway_folder is not None:
            from matcher.http.gateway import remove_socket_folder

            remove_socket_folder(self._gateway_folder)

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def _log_progress(step: float = 0.1) -> Callable[[int, int], None]:
    """A progress callback for the index load that logs every ``step`` of the way (the bank
    draws no bar: it never imports tqdm)."""
    logged = [0.0]

    def progress(done: int, total: int) -> None:
        if total and (done >= total or done / total >= logged[0] + step):
            logged[0] = done / total
            log.info("loading index: %s of %s hashes", f"{done:,}", f"{total:,}")

    return progress


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(*, json_lines: bool = False, level: str = "INFO") -> None:
    """Log to stderr, as text or JSON lines. Nothing we log carries a hash value."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger("matcher")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


async def serve(bank: Bank, config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    server = await Server.start(bank, config)
    log.info("listening on %s (port %d)", config.address, server.port)
    if server.metrics_port is not None:
        log.info("metrics on http://%s/metrics", config.metrics_address)
    if config.http is not None:
        host = config.http.address.rpartition(":")[0] or "0.0.0.0"
        log.info("web app and HTTP API on http://%s:%d/", host, server.http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls (grace %.0f s)", config.grace_seconds)
    await server.stop()
    log.info("stopped")
