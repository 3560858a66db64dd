"""``matcher serve``: run the gRPC service on a store."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from matcher.cli._common import data_options, program_name
from matcher.cli.backup import key_file_option, sqlite_folder


def _fail(message: str) -> NoReturn:
    """One line on stderr naming the culprit, exit status 1 (never a traceback)."""
    click.echo(f"matcher: {message}", err=True)
    sys.exit(1)


def check_port(address: str, option: str) -> None:
    """Refuse an address that is malformed or whose port another process holds, before
    anything starts (gRPC's own error names neither the option nor the cause)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        _fail(f"{option} {address!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"
    port = int(port_text)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail(f"{option} {address}: unknown host {host!r} ({exc.strerror})")
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            reason = "is in use" if exc.errno == 98 else f"cannot be used ({exc.strerror})"
            _fail(f"{option} {address}: port {port} {reason}")


def check_tls(cert: str | None, key: str | None, client_ca: str | None) -> None:
    """Refuse TLS files that are not what their option says (PEM certificate, PEM private
    key without passphrase, matching each other), naming the file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def certificate(path: str, option: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(Path(path).read_bytes())
        except OSError as exc:
            _fail(f"{option} {path}: {exc.strerror}")
        except ValueError:
            _fail(f"{option} {path} is not a PEM certificate")

    if cert and key:
        mine = certificate(cert, "--tls-cert")
        try:
            private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
        except OSError as exc:
            _fail(f"--tls-key {key}: {exc.strerror}")
        except (ValueError, TypeError):
            _fail(f"--tls-key {key} is not a PEM private key without a passphrase")
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if private.public_key().public_bytes(der, public) != mine.public_key().public_bytes(
            der, public
        ):
            _fail(f"--tls-key {key} does not belong to the certificate --tls-cert {cert}")
    if client_ca:
        certificate(client_ca, "--tls-client-ca")


def _env(name: str) -> dict[str, Any]:
    """The environment variable an option also reads, shown in ``--help``."""
    return {"envvar": f"MATCHER_{name}", "show_envvar": True}


@click.command("serve")
@data_options
@key_file_option
@click.option(
    "--address",
    default="127.0.0.1:50051",
    show_default=True,
    help="gRPC host:port.",
    **_env("ADDRESS"),
)
@click.option(
    "--metrics-address",
    default="127.0.0.1:9464",
    show_default=True,
    help="host:port for Prometheus /metrics; 'off' to disable.",
    **_env("METRICS_ADDRESS"),
)
@click.option(
    "--http-address",
    default=None,
    help="host:port for the HTTP/JSON API and the web app (off unless given; 'off' too).",
    **_env("HTTP_ADDRESS"),
)
@click.option(
    "--self-service-org",
    metavar="NAME",
    default=None,
    help="Let victims open cases themselves on the web app, owned by this organisation "
    "(created if new). Needs --http-address.",
    **_env("SELF_SERVICE_ORG"),
)
@click.option(
    "--self-service-limit",
    type=click.IntRange(1, 10_000),
    default=3,
    show_default=True,
    help="Cases one client address may open by self-service per hour.",
    **_env("SELF_SERVICE_LIMIT"),
)
@click.option(
    "--rate",
    type=float,
    default=20_000,
    show_default=True,
    help="Queries/s per key.",
    **_env("RATE"),
)
@click.option(
    "--burst",
    type=float,
    default=40_000,
    show_default=True,
    help="Burst per key.",
    **_env("BURST"),
)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Most queries per Match request or stream message.",
    **_env("MAX_BATCH"),
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds in-flight calls get to finish on SIGTERM/SIGINT.",
    **_env("GRACE"),
)
@click.option(
    "--require-deadline/--no-require-deadline",
    default=True,
    show_default=True,
    help="Refuse Match calls that set no deadline.",
    **_env("REQUIRE_DEADLINE"),
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True),
    help="Server certificate (PEM).",
    **_env("TLS_CERT"),
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True),
    help="Server private key (PEM).",
    **_env("TLS_KEY"),
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, exists=True),
    help="Require client certificates signed by this CA (mutual TLS).",
    **_env("TLS_CLIENT_CA"),
)
@click.option(
    "--follow-poll",
    type=click.FloatRange(0.01, 60),
    default=0.25,
    show_default=True,
    help="Read the store's change log at least this often, in seconds (on PostgreSQL a "
    "notification wakes the replica sooner).",
    **_env("FOLLOW_POLL"),
)
@click.option(
    "--keep-log",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds of change log to keep when trimming it (0: never trim). A replica down "
    "for longer reloads from a snapshot.",
    **_env("KEEP_LOG"),
)
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Readiness turns NOT_SERVING when the index has not caught up with the store for "
    "this many seconds.",
    **_env("STALE_AFTER"),
)
@click.option(
    "--allowlist-seed/--no-allowlist-seed",
    default=True,
    show_default=True,
    help="Seed an allowlist never seeded before with the generated featureless and "
    "geometric pictures (once: removals stick; 'matcher allowlist seed' adds it again).",
    **_env("ALLOWLIST_SEED"),
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    help="This replica's withdrawal ledger file (one per replica; '{host}' in the path is "
    "replaced by the host name), re-applied after a restore by 'matcher ledger apply'. "
    "Default: none on PostgreSQL; withdrawals.jsonl in the data folder on SQLite.",
    **_env("LEDGER"),
)
@click.option(
    "--pool-size",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Most connections this replica opens to a PostgreSQL store (replicas x this must "
    "stay below the server's max_connections). SQLite has no pool.",
    **_env("POOL_SIZE"),
)
@click.option(
    "--quarantine-after",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Quarantine an item once this many distinct partners' current verdicts say its "
    "matches are wrong (0: never).",
    **_env("QUARANTINE_AFTER"),
)
@click.option(
    "--flood-control/--no-flood-control",
    default=True,
    show_default=True,
    help="Quarantine items whose match rate jumps far above their own history and the "
    "bank's norm (a widely shared picture was enrolled).",
    **_env("FLOOD_CONTROL"),
)
@click.option(
    "--flood-floor",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Flood: uploads in the last hour below which an item is never a flood.",
    **_env("FLOOD_FLOOR"),
)
@click.option(
    "--flood-history-factor",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Flood: how far above the item's own mean per hour its last hour must be.",
    **_env("FLOOD_HISTORY_FACTOR"),
)
@click.option(
    "--flood-norm-factor",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Flood: how far above the bank's mean per matched item and hour.",
    **_env("FLOOD_NORM_FACTOR"),
)
@click.option(
    "--flood-history-hours",
    type=click.IntRange(1, 24 * 90),
    default=24,
    show_default=True,
    help="Flood: hours of history for the item's baseline and the bank's norm.",
    **_env("FLOOD_HISTORY_HOURS"),
)
@click.option(
    "--flood-flush",
    type=click.FloatRange(0.05, 600),
    default=5.0,
    show_default=True,
    help="Flood: seconds between adding this replica's match counts to the store.",
    **_env("FLOOD_FLUSH"),
)
@click.option(
    "--probe-throttle",
    type=click.FloatRange(0.01, 86_400),
    default=60.0,
    show_default=True,
    help="Seconds a partner key is throttled each time its queries cross a probing bound "
    "(every replica refuses it; the counts are in the store).",
    **_env("PROBE_THROTTLE"),
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or JSON lines.",
    **_env("LOG_FORMAT"),
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    help="DEBUG, INFO, WARNING...",
    **_env("LOG_LEVEL"),
)
def serve_command(
    data: str,
    store_url: str | None,
    key_file: str | None,
    address: str,
    metrics_address: str,
    http_address: str | None,
    self_service_org: str | None,
    self_service_limit: int,
    rate: float,
    burst: float,
    max_batch: int,
    grace: float,
    require_deadline: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    follow_poll: float,
    keep_log: float,
    stale_after: float,
    allowlist_seed: bool,
    ledger: str | None,
    pool_size: int,
    quarantine_after: int,
    flood_control: bool,
    flood_floor: int,
    flood_history_factor: float,
    flood_norm_factor: float,
    flood_history_hours: int,
    flood_flush: float,
    probe_throttle: float,
    log_format: str,
    log_level: str,
) -> None:
    """Run the matcher gRPC service on the bank in a data folder (or --store), and with
    --http-address the HTTP/JSON API and the web app beside it.

    The port opens at once; health reports NOT_SERVING until the index is loaded from the store
    and caught up with its change log, then SERVING while it stays caught up (the readiness
    probe; the health service name "liveness" answers SERVING while the process is up).
    Several replicas share one PostgreSQL store (--store postgresql://...): each follows the
    others' writes. One server per SQLite data folder: a second one on the same folder is
    refused (lock file matcher.lock). Every option can also be set by the environment
    variable shown. SIGTERM or SIGINT stops it gracefully (exit status 0).

    \b
    Examples:
      matcher serve --data ./matcher-data
      matcher serve --http-address 127.0.0.1:8080   # and the web app, http://127.0.0.1:8080/
      matcher serve --http-address 0.0.0.0:8080 --self-service-org "Self-service"
      matcher serve --address 0.0.0.0:50051 --log-format json --tls-cert s.pem --tls-key s.key
      MATCHER_STORE=postgresql://matcher@db/matcher MATCHER_ADDRESS=0.0.0.0:50051 matcher serve
      matcher serve --store postgresql://matcher@db/matcher --ledger /var/lib/matcher/w.jsonl
      matcher serve --store postgresql://matcher@db/matcher --pool-size 20
      matcher serve --quarantine-after 3 --flood-floor 1000
    """
    import asyncio
    import dataclasses

    from matcher.bank import Bank
    from matcher.bank.flood import FloodRule
    from matcher.bank.probing import ProbeLimits
    from matcher.http import HttpConfig
    from matcher.principal import Principal
    from matcher.service import ServerConfig, ServiceLimits, TlsConfig, configure_logging, serve
    from matcher.store import open_store
    from matcher.store.lock import FolderLock

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if http_address == "off":
        http_address = None
    if self_service_org is not None and not http_address:
        raise click.UsageError("--self-service-org needs --http-address (the web app)")
    check_tls(tls_cert, tls_key, tls_client_ca)
    check_port(address, "--address")
    if metrics_address != "off":
        check_port(metrics_address, "--metrics-address")
    if http_address:
        check_port(http_address, "--http-address")
    configure_logging(json_lines=log_format == "json", level=log_level)
    tls = (
        TlsConfig(
            cert=Path(tls_cert),
            key=Path(tls_key),
            client_ca=Path(tls_client_ca) if tls_client_ca else None,
        )
        if tls_cert and tls_key
        else None
    )
    config = ServerConfig(
        address=address,
        metrics_address=None if metrics_address == "off" else metrics_address,
        limits=ServiceLimits(
            max_batch=max_batch,
            require_deadline=require_deadline,
            probing=ProbeLimits(throttle_seconds=probe_throttle),
        ),
        rate=rate,
        burst=burst,
        grace_seconds=grace,
        tls=tls,
        follow_poll_seconds=follow_poll,
        keep_log_seconds=keep_log or None,
        stale_after_seconds=stale_after,
        quarantine_after=quarantine_after,
        flood=FloodRule(
            enabled=flood_control,
            floor=flood_floor,
            history_factor=flood_history_factor,
            norm_factor=flood_norm_factor,
            history_hours=flood_history_hours,
            flush_seconds=flood_flush,
        ),
    )
    postgres = bool(store_url and store_url.startswith(("postgresql://", "postgres://")))
    # Held until this process ends: a second server on the folder would never see our writes.
    lock = None if postgres else FolderLock.acquire(sqlite_folder(data, store_url), "matcher serve")
    from matcher.store.ledger import expand_path

    ledger_path = expand_path(ledger) if ledger else None
    bank = Bank(
        open_store(store_url or data, key_file=key_file, pool_size=pool_size, ledger=ledger_path),
        allowlist_seed=allowlist_seed,
    )
    try:
        if postgres and ledger_path is None:
            click.echo(
                "matcher: no withdrawal ledger (--ledger): a restore of the database to an "
                "earlier point would bring back the withdrawals made after it",
                err=True,
            )
        if http_address:
            http = HttpConfig(
                address=http_address,
                self_service_org_id=_self_service_org(bank, self_service_org),
                self_service_cases=self_service_limit,
            )
            config = dataclasses.replace(config, http=http)
        if not any(k.active for k in bank.accounts.list_api_keys(by=Principal.operator("cli"))):
            where = f"--store {store_url}" if store_url else f"--data {data}"
            click.echo(
                "matcher: no API keys yet. Create a first one (shown once) with:\n"
                f"  {program_name()} keys create --role admin --name ops {where}",
                err=True,
            )
        try:
            asyncio.run(serve(bank, config))
        except (OSError, RuntimeError) as exc:
            _fail(f"cannot serve on {address}: {exc}")
    finally:
        bank.close()
        if lock is not None:
            lock.release()


def _self_service_org(bank: Any, name: str | None) -> int | None:
    """The id of the self-service organisation, created if new (as ``keys create --org``)."""
    if name is None:
        return None
    from matcher.principal import Principal

    if not name.strip():
        _fail("--self-service-org needs an organisation name")
    me = Principal.operator("cli")
    found = [o for o in bank.accounts.list_organisations(by=me) if o.name == name.strip()]
    org = found[0] if found else bank.accounts.create_organisation(name, by=me)
    return int(org.id)


@click.command("health")
@click.option(
    "--server",
    default="127.0.0.1:50051",
    show_default=True,
    envvar="MATCHER_SERVER",
    show_envvar=True,
    help="The service's host:port.",
)
@click.option(
    "--service",
    default="",
    help="Health service name: '' (default) is readiness (loaded and caught up with the "
    "store), 'liveness' answers SERVING while the process is up.",
)
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Deadline (s).")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True),
    help="Connect with TLS, trusting this CA certificate (PEM).",
)
def health_command(server: str, service: str, timeout: float, tls_ca: str | None) -> None:
    """Ask a running service whether it is SERVING: exit 0 if so, 1 if not (a probe).

    For container health checks and scripts that wait for a replica to be ready.

    \b
    Examples:
      matcher health --server 127.0.0.1:50051
      matcher health --service liveness
    """
    from pathlib import Path

    from matcher.client import Client

    roots = Path(tls_ca).read_bytes() if tls_ca else None
    with Client(server, None, timeout=timeout, root_certificates=roots) as client:
        serving = client.healthy(service)
    click.echo("SERVING" if serving else "NOT_SERVING")
    sys.exit(0 if serving else 1)
