"""``matcher review``: the quarantined items of your organisation, and your decisions on them
(practitioners)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from matcher.cli._common import Remote, Writer, echo_json, remote_options

if TYPE_CHECKING:
    from matcher.records import ReviewEntry

_COLUMNS = [
    "item",
    "reason",
    "since",
    "partners",
    "matches",
    "reported_correct",
    "reported_wrong",
    "enrolled",
    "reviewed",
    "label",
    "description",
]


@click.group("review")
def review_group() -> None:
    """Review quarantined images (items): restore them or withdraw them (practitioners).

    An item is quarantined, and stops matching everywhere, when enough partners reported its
    matches as wrong or when its matches flooded in far above the norm (a widely shared
    picture). It stays held until a practitioner of its organisation decides.

    \b
    Example:
      matcher review list
    """


def _row(entry: ReviewEntry) -> dict[str, Any]:
    q = entry.quarantine
    return {
        "item": entry.name,
        "reason": str(q.reason),
        "since": q.since.isoformat(timespec="seconds"),
        "partners": q.partners,
        "matches": q.matches,
        "reported_correct": entry.reported_correct,
        "reported_wrong": entry.reported_wrong,
        "enrolled": entry.created_at.isoformat(timespec="seconds"),
        "reviewed": entry.reviewed_at.isoformat(timespec="seconds") if entry.reviewed_at else "",
        "label": entry.label or "",
        "description": q.description,
    }


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("No quarantined items: nothing to review.")
        return
    shown = ["item", "reason", "since", "reported_wrong", "label", "description"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in shown}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in shown).rstrip())
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(widths[c]) for c in shown).rstrip())


@review_group.command("list")
@remote_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "table"]),
    default=None,
    help="Output format (default: a table on a terminal, else JSON Lines).",
)
@click.option("--org", type=int, help="Admins only: one organisation's id (default: all).")
def review_list(remote: Remote, fmt: str | None, org: int | None) -> None:
    """List the quarantined items waiting for review, the oldest first.

    One row per item: its name (cases/NUMBER/items/N), why it is quarantined (reports or
    flood) and since when, the counts behind it, and the reason in plain words.

    \b
    Examples:
      matcher review list
      matcher review list --format csv > queue.csv
    """
    entries = remote.call(lambda c: c.review_queue(org))
    rows = [_row(e) for e in entries]
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    if fmt == "table":
        _table(rows)
        return
    out = Writer(sys.stdout, fmt, _COLUMNS)
    for row in rows:
        out.write(row)


def _decide(remote: Remote, item: str, decision: str, note: str) -> None:
    from matcher import contract
    from matcher.client import as_dict

    case, number = contract.item_ref_from_name(item, field="ITEM")
    status = remote.call(lambda c: c.review_item(case, number, decision, note=note))
    echo_json(as_dict(status))


@review_group.command("restore")
@remote_options
@click.argument("item", metavar="ITEM")
@click.option("--note", default="", help="A short note for the audit trail (<= 100 characters).")
def review_restore(remote: Remote, item: str, note: str) -> None:
    """Restore a quarantined item: it is the person's image, so it matches again, now.

    ITEM is the name `matcher review list` shows (cases/NUMBER/items/N). Verdicts given
    before the restore stop counting; flood control leaves the item alone from now on.

    \b
    Example:
      matcher review restore cases/K7QP-2MXR-9TDA/items/2 --note "checked with the victim"
    """
    _decide(remote, item, "restore", note)


@review_group.command("withdraw")
@remote_options
@click.argument("item", metavar="ITEM")
@click.option("--note", default="", help="A short note for the audit trail (<= 100 characters).")
def review_withdraw(remote: Remote, item: str, note: str) -> None:
    """Withdraw a quarantined item: it should not be in the bank; its hashes are deleted.

    ITEM is the name `matcher review list` shows (cases/NUMBER/items/N).

    \b
    Example:
      matcher review withdraw cases/K7QP-2MXR-9TDA/items/2 --note "a meme, not the victim's"
    """
    _decide(remote, item, "withdraw", note)
