"""``matcher status`` and ``matcher withdraw``: the victim's own commands, with the case number
and its secret (no API key). A wrong number and a wrong secret look alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import click

from matcher.cli._common import F, Remote, remote_options

if TYPE_CHECKING:
    from matcher.client import Client
    from matcher.records import CaseStatus, ItemStatus

T = TypeVar("T")


def _secret_option(fn: F) -> F:
    return click.option(
        "--secret",
        prompt="Withdrawal secret",
        hide_input=True,
        envvar="MATCHER_CASE_SECRET",
        help="The secret you were given (asked for when not set; or MATCHER_CASE_SECRET).",
    )(fn)


def _retrying(remote: Remote, fn: Callable[[Client], T]) -> T:
    """``remote.call(fn)``; when refused for too many failed attempts, say when to try again."""
    from matcher.errors import RateLimited

    try:
        return remote.call(fn)
    except RateLimited as exc:
        when = datetime.now(UTC) + timedelta(seconds=exc.retry_after)
        raise click.ClickException(
            f"{exc} (at {when:%H:%M:%S} UTC). Your secret still works then: nobody else's "
            "attempts can lock you out."
        ) from None


def _day(item: ItemStatus | CaseStatus) -> str:
    return item.created_at.date().isoformat()


def describe_item(item: ItemStatus) -> str:
    """One line about one photo, in words: never a hash value."""
    label = f" ({item.label})" if item.label else ""
    if item.withdrawn_at is not None:
        return f"photo {item.number}{label}: withdrawn on {item.withdrawn_at.date().isoformat()}"
    reported = f", matches reported: {item.match_count}" if item.match_count else ""
    held = ""
    if item.quarantine is not None:
        # Said plainly: the photo is still held, but partners get no match for it for now.
        held = (
            f"; ON HOLD since {item.quarantine.since.date().isoformat()} "
            f"({item.quarantine.description}): not matched until your helpline reviews it"
        )
    return (
        f"photo {item.number}{label}: {item.state}, enrolled {_day(item)}, "
        f"{item.hash_count} hashes{reported}{held}"
    )


@click.command("status")
@remote_options(api_key=False)
@click.argument("case_number")
@_secret_option
def status_command(remote: Remote, case_number: str, secret: str) -> None:
    """Show your case with its number and secret: its state and each photo's.

    Lists each photo by its number (photo 1, 2, ...) with its state and dates; use the number
    with `matcher withdraw --item N` to withdraw one photo. No API key needed.

    \b
    Example:
      matcher status K7QP-2MXR-9TDA
    """
    status = _retrying(remote, lambda c: c.get_case_with_secret(case_number, secret))
    withdrawn = sum(1 for i in status.items if i.withdrawn_at is not None)
    more = f" ({withdrawn} withdrawn)" if withdrawn else ""
    click.echo(f"case {status.number}: {status.state}, {len(status.items)} photos{more}")
    for item in status.items:
        click.echo(f"  {describe_item(item)}")


@click.command("withdraw")
@remote_options(api_key=False)
@click.argument("case_number")
@click.option(
    "--item",
    type=click.IntRange(min=1),
    help="Withdraw only this photo (its number in `matcher status`), not the whole case.",
)
@_secret_option
def withdraw_command(remote: Remote, case_number: str, item: int | None, secret: str) -> None:
    """Withdraw your case, or one photo of it, with its number and secret (no API key needed).

    Once this says "withdrawn", no partner gets a match for those images any more, and their
    hashes are deleted. Wrong attempts are limited per address (the message says when to try
    again); nobody else's attempts can lock you out.

    \b
    Examples:
      matcher withdraw K7QP-2MXR-9TDA
      matcher withdraw K7QP-2MXR-9TDA --item 2
    """
    if item is None:
        case = _retrying(remote, lambda c: c.withdraw_with_secret(case_number, secret))
        click.echo(f"case {case.number}: {case.state}")
    else:
        done = _retrying(remote, lambda c: c.withdraw_item_with_secret(case_number, secret, item))
        click.echo(f"photo {done.number} of case {done.case_number}: {done.state}")
