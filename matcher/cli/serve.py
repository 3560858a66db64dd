"""``matcher serve``: run the gRPC service on a store."""

from __future__ import annotations

import sys

import click

from matcher.cli._common import data_options, program_name


@click.command("serve")
@data_options
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
    then SERVING. SIGTERM or SIGINT stops it gracefully (exit status 0).

    \b
    Examples:
      matcher serve --data ./matcher-data
      matcher serve --address 0.0.0.0:50051 --log-format json --tls-cert s.pem --tls-key s.key
    """
    import asyncio
    from pathlib import Path

    from matcher.bank import Bank
    from matcher.principal import Principal
    from matcher.service import ServerConfig, ServiceLimits, TlsConfig, configure_logging, serve

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
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
    bank = Bank.open(store_url or data, load=False)
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
        except OSError as exc:
            click.echo(f"matcher: cannot serve on {address}: {exc}", err=True)
            sys.exit(1)
    finally:
        bank.close()
