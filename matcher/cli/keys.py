"""``matcher keys``: API keys, managed directly in the store by operators (no server needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from matcher.cli._common import data_options, echo_json


@click.group("keys")
def keys_group() -> None:
    """Create, list, revoke and restore API keys and set their policies, directly in the data
    folder (operators).

    \b
    Example:
      matcher keys create --role partner --name acme
    """


if TYPE_CHECKING:
    from matcher.bank import Accounts
    from matcher.records import KeyPolicy


def _policy_json(policy: KeyPolicy) -> dict[str, object]:
    return {
        "exact_distances": policy.exact_distances,
        "max_distance": dict(policy.max_distance),
        "daily_hashes": policy.daily_hashes,
        "suspended": policy.suspended_at.isoformat() if policy.suspended_at else None,
        "suspend_reason": policy.suspend_reason or None,
        "named_in_reports": policy.named_in_reports,
    }


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
                    **_policy_json(accounts.policy(k.id)),
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


@keys_group.command("restore")
@data_options
@click.argument("key_id", type=int)
def keys_restore(data: str, store_url: str | None, key_id: int) -> None:
    """Lift the suspension probing detection put on a key (see `matcher keys list`).

    Look at the audit first: a key is suspended when its queries looked like reading stored
    hashes back (near-identical bursts, many hashes at one item's edge). A running server
    accepts the key again within seconds.

    \b
    Example:
      matcher keys restore 3
    """
    from matcher.principal import Principal

    with _accounts(data, store_url) as accounts:
        accounts.restore_api_key(key_id, by=Principal.operator("cli"))
    click.echo(f"API key {key_id} restored", err=True)


def _distance(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.strip().isdigit():
        raise click.BadParameter("give SIGNAL=BITS, e.g. pdq=24")
    return name.strip(), int(value)


@keys_group.command("policy")
@data_options
@click.argument("key_id", type=int)
@click.option(
    "--exact-distances/--no-exact-distances",
    default=None,
    help="Grant (or withdraw) exact distances in matches. A RISK: with exact distances one "
    "re-upload and its one-bit flips read a stored hash back. Grant only to partners you "
    "audit.",
)
@click.option(
    "--max-distance",
    multiple=True,
    metavar="SIGNAL=BITS",
    help="A threshold stricter than the bank's for this key (repeatable), e.g. pdq=24.",
)
@click.option("--clear-max-distance", is_flag=True, help="Drop the key's stricter thresholds.")
@click.option(
    "--daily-hashes",
    type=click.IntRange(min=0),
    help="At most this many query hashes per UTC day (0: no budget).",
)
@click.option(
    "--named-in-reports/--not-named-in-reports",
    default=None,
    help="The partner agreed (or no longer agrees) to have this key's name shown beside its "
    "verdicts to the organisations owning the items it reports on.",
)
def keys_policy(
    data: str,
    store_url: str | None,
    key_id: int,
    exact_distances: bool | None,
    max_distance: tuple[str, ...],
    clear_max_distance: bool,
    daily_hashes: int | None,
    named_in_reports: bool | None,
) -> None:
    """Set what a partner key may learn and spend, and print its policy as JSON.

    By default a key gets bands (strong / weak), never exact distances, at the bank's
    thresholds, with no daily budget.

    \b
    Examples:
      matcher keys policy 3 --max-distance pdq=24 --daily-hashes 5000000
      matcher keys policy 3 --exact-distances
      matcher keys policy 3 --named-in-reports
      matcher keys policy 3
    """
    from matcher.principal import Principal

    distances = dict(_distance(d) for d in max_distance)
    with _accounts(data, store_url) as accounts:
        me = Principal.operator("cli")
        if (
            exact_distances is not None
            or distances
            or clear_max_distance
            or daily_hashes is not None
            or named_in_reports is not None
        ):
            policy = accounts.update_key_policy(
                key_id,
                exact_distances=exact_distances,
                max_distance=distances if distances or clear_max_distance else None,
                daily_hashes=daily_hashes,
                named_in_reports=named_in_reports,
                by=me,
            )
        else:
            policy = accounts.policy(key_id)
    echo_json({"id": key_id, **_policy_json(policy)})
    if exact_distances:
        click.echo(
            f"API key {key_id} now gets exact distances: it can read stored hashes back from "
            "re-uploads. Withdraw with --no-exact-distances.",
            err=True,
        )
