"""``matcher serve``: run the gRPC service on a store."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import NoReturn

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


@click.command("serve")
@data_options
@key_file_option
@click.option("--address", default="127.0.0.1:50051", show_default=True, help="gRPC host:port.")
@click.option(
    "--metrics-address",
    default="127.0.0.1:9464",
    show_default=True,
    help="host:port for Prometheus /metrics; 'off' to disable.",
)
@click.option("--rate", type=float, default=20_000, show_default=True, help="Queries/s per key.")
@click.option("--burst", type=float, default=40_000, show_default=True, help="Burst per key.")
@click.option(
    "--max-batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Most queries per Match request or stream message.",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds in-flight calls get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--require-deadline/--no-require-deadline",
    default=True,
    show_default=True,
    help="Refuse Match calls that set no deadline.",
)
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Server certificate (PEM)."
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, exists=True), help="Server private key (PEM)."
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, exists=True),
    help="Require client certificates signed by this CA (mutual TLS).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or JSON lines.",
)
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING...")
def serve_command(
    data: str,
    store_url: str | None,
    key_file: str | None,
    address: str,
    metrics_address: str,
    rate: float,
    burst: float,
    max_batch: int,
    grace: float,
    require_deadline: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    log_format: str,
    log_level: str,
) -> None:
    """Run the matcher gRPC service on the bank in a data folder (or --store).

    The port opens at once; health reports NOT_SERVING until the index is loaded from the store,
    then SERVING. SIGTERM or SIGINT stops it gracefully (exit status 0). One server per
    SQLite data folder: a second one on the same folder is refused (lock file matcher.lock).

    \b
    Examples:
      matcher serve --data ./matcher-data
      matcher serve --address 0.0.0.0:50051 --log-format json --tls-cert s.pem --tls-key s.key
    """
    import asyncio

    from matcher.bank import Bank
    from matcher.principal import Principal
    from matcher.service import ServerConfig, ServiceLimits, TlsConfig, configure_logging, serve
    from matcher.store import open_store
    from matcher.store.lock import FolderLock

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    check_tls(tls_cert, tls_key, tls_client_ca)
    check_port(address, "--address")
    if metrics_address != "off":
        check_port(metrics_address, "--metrics-address")
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
        limits=ServiceLimits(max_batch=max_batch, require_deadline=require_deadline),
        rate=rate,
        burst=burst,
        grace_seconds=grace,
        tls=tls,
    )
    postgres = bool(store_url and store_url.startswith(("postgresql://", "postgres://")))
    # Held until this process ends: a second server on the folder would never see our writes.
    lock = None if postgres else FolderLock.acquire(sqlite_folder(data, store_url), "matcher serve")
    bank = Bank(open_store(store_url or data, key_file=key_file))
    try:
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
