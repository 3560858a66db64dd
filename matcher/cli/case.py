"""``matcher case``: open, follow and withdraw cases and their images (practitioners)."""

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

    Give both to the person the images belong to: with them they can see and withdraw the
    case, or one image of it, themselves, at any time (`matcher status`, `matcher withdraw`).

    \b
    Example:
      matcher case create
    """
    new = remote.call(lambda c: c.create_case(org))
    echo_json({"case": new.number, "secret": new.secret})
    click.echo("The secret is shown once: give it, with the case number, to the person.", err=True)


@case_group.command("status")
@remote_options
@click.argument("case")
def case_status(remote: Remote, case: str) -> None:
    """Show a case and its images (items): states, hashes held, dates, matches reported.

    One JSON object: the case's counts and "items", one per enrolled image by number (kind,
    state, label, hashes per signal, matches reported right and wrong, enrolled and withdrawn
    dates). Never a hash value.

    \b
    Example:
      matcher case status K7QP-2MXR-9TDA
    """
    from matcher.client import as_dict

    echo_json(as_dict(remote.call(lambda c: c.get_case(case))))


@case_group.command("withdraw")
@remote_options
@click.argument("case")
@click.option(
    "--item",
    type=click.IntRange(min=1),
    help="Withdraw only this image (its number in `matcher case status`).",
)
def case_withdraw(remote: Remote, case: str, item: int | None) -> None:
    """Withdraw a case, or one image of it (--item N): its hashes are deleted, matching stops
    now. The case's other images still match after an --item withdrawal.

    \b
    Examples:
      matcher case withdraw K7QP-2MXR-9TDA
      matcher case withdraw K7QP-2MXR-9TDA --item 2
    """
    from matcher.client import as_dict

    if item is None:
        echo_json(as_dict(remote.call(lambda c: c.withdraw(case))))
    else:
        echo_json(as_dict(remote.call(lambda c: c.withdraw_item(case, item))))
