"""``matcher case``: open, follow and withdraw cases (practitioners)."""

from __future__ import annotations

import click

from matcher.cli._common import Remote, echo_json, remote_options


@click.group("case")
def case_group() -> None:
    """Open cases, follow them and withdraw them (practitioners).

    \b
    Example:
      matcher case create
    """


@case_group.command("create")
@remote_options
@click.option("--org", type=int, help="Admins only: the owning organisation's id.")
def case_create(remote: Remote, org: int | None) -> None:
    """Open a case; prints its number and the withdrawal secret (shown once).

    Give both to the person the images belong to: with them they can withdraw the case
    themselves, at any time (`matcher withdraw`).

    \b
    Example:
      matcher case create
    """
    new = remote.call(lambda c: c.create_case(org))
    echo_json({"case": new.case.number, "secret": new.secret})
    click.echo("The secret is shown once: give it, with the case number, to the person.", err=True)


@case_group.command("status")
@remote_options
@click.argument("case")
def case_status(remote: Remote, case: str) -> None:
    """Show a case: state, hashes stored, matches reported so far.

    \b
    Example:
      matcher case status K7QP-2MXR-9TDA
    """
    from matcher.client import as_dict

    echo_json(as_dict(remote.call(lambda c: c.get_case(case))))


@case_group.command("withdraw")
@remote_options
@click.argument("case")
def case_withdraw(remote: Remote, case: str) -> None:
    """Withdraw a case for its owner organisation: its hashes are deleted, matching stops now.

    \b
    Example:
      matcher case withdraw K7QP-2MXR-9TDA
    """
    from matcher.client import as_dict

    echo_json(as_dict(remote.call(lambda c: c.withdraw(case))))
