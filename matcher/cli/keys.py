"""``matcher keys``: API keys, managed directly in the store by operators (no server needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from matcher.cli._common import data_options, echo_json


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys, directly in the data folder (operators).

    \b
    Example:
      matcher keys create --role partner --name acme
    """


if TYPE_CHECKING:
    from matcher.bank import Accounts


def _accounts(data: str, store_url: str | None) -> Accounts:
    # Accounts needs the store only: no index, no kernel to compile (under 3 s on a fresh clone).
    from matcher.bank import Accounts

    return Accounts.open(store_url or data)


@keys_group.command("create")
@data_options
@click.option(
    "--role",
    type=click.Choice(["partner", "practitioner", "admin"]),
    required=True,
    help="What the key may do.",
)
@click.option("--name", required=True, help="A label for people, e.g. the partner's name.")
@click.option("--org", help="Organisation name (required for practitioners; created if new).")
def keys_create(data: str, store_url: str | None, role: str, name: str, org: str | None) -> None:
    """Create an API key and print it once: only its hash is stored.

    The key alone goes to standard output (so it can be captured); the advice goes to stderr.

    \b
    Examples:
      matcher keys create --role admin --name ops
      matcher keys create --role practitioner --name helpline-a --org "Helpline A"
      KEY=$(matcher keys create --role partner --name acme)
    """
    from matcher.principal import Principal, Role

    me = Principal.operator("cli")
    with _accounts(data, store_url) as accounts:
        org_id = None
        if org:
            found = [o for o in accounts.list_organisations(by=me) if o.name == org.strip()]
            org_id = found[0].id if found else accounts.create_organisation(org, by=me).id
        new = accounts.create_api_key(name, Role(role), org_id=org_id, by=me)
    click.echo(new.key)
    click.echo(
        f"API key {new.record.id} ({role}, {name}) created. It is shown once: store it now, "
        "and send it as 'authorization: Bearer <key>' (or MATCHER_API_KEY for the CLI).",
        err=True,
    )


@keys_group.command("list")
@data_options
def keys_list(data: str, store_url: str | None) -> None:
    """List API keys as JSON lines (never the keys themselves).

    \b
    Example:
      matcher keys list --data ./matcher-data
    """
    from matcher.principal import Principal

    with _accounts(data, store_url) as accounts:
        for k in accounts.list_api_keys(by=Principal.operator("cli")):
            echo_json(
                {
                    "id": k.id,
                    "name": k.name,
                    "role": str(k.role),
                    "organisation": k.org_id,
                    "prefix": k.prefix,
                    "created": k.created_at.isoformat(),
                    "revoked": k.revoked_at.isoformat() if k.revoked_at else None,
                }
            )


@keys_group.command("revoke")
@data_options
@click.argument("key_id", type=int)
def keys_revoke(data: str, store_url: str | None, key_id: int) -> None:
    """Revoke an API key by id; a running server refuses it within seconds.

    \b
    Example:
      matcher keys revoke 3
    """
    from matcher.principal import Principal

    with _accounts(data, store_url) as accounts:
        accounts.revoke_api_key(key_id, by=Principal.operator("cli"))
    click.echo(f"API key {key_id} revoked", err=True)
