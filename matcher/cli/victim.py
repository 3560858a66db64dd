"""``matcher withdraw``: the victim's own commands, with a case number and its secret."""

from __future__ import annotations

import click

from matcher.cli._common import Remote, remote_options


def _secret_option(fn: object) -> object:
    return click.option(
        "--secret",
        prompt="Withdrawal secret",
        hide_input=True,
        envvar="MATCHER_CASE_SECRET",
        help="The secret you were given (asked for when not set; or MATCHER_CASE_SECRET).",
    )(fn)


@click.command("withdraw")
@remote_options(api_key=False)
@click.argument("case_number")
@_secret_option
def withdraw_command(remote: Remote, case_number: str, secret: str) -> None:
    """Withdraw your case with its number and secret (no API key needed).

    Once this says "withdrawn", no partner gets a match for your images any more, and their
    hashes are deleted. Wrong attempts are limited.

    \b
    Example:
      matcher withdraw K7QP-2MXR-9TDA
    """
    state = remote.call(lambda c: c.withdraw_with_secret(case_number, secret))
    click.echo(f"case {case_number}: {state}")
