"""``matcher allowlist``: the negative bank, managed directly in the store by operators.

A running server applies a change at once for enrollments (it reads the allowlist's version
before every check) and within its follow interval for matches (``--follow-poll``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from matcher.cli._common import INPUT_FILE, data_options, echo_json, hashed_files

if TYPE_CHECKING:
    from matcher.bank import Bank
    from matcher.records import AllowlistEntry


@click.group("allowlist")
def allowlist_group() -> None:
    """Add, list and remove allowlist entries: hashes of benign, widely shared pictures (a
    meme, a stock photo) and patterns that match unrelated files. No item that looks like one
    can be enrolled, and matches on them are suppressed.

    \b
    Example:
      matcher allowlist add --label "meme: distracted boyfriend" meme.jpg
    """


def _bank(data: str, store_url: str | None) -> Bank:
    # The store and the allowlist only: no index load, no kernel to compile.
    from matcher.bank import Bank

    return Bank.open(store_url or data, load=False)


def _entry_json(entry: AllowlistEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "signal": entry.signal,
        "label": entry.label,
        "source": str(entry.source),
        "created": entry.created_at.isoformat(),
    }


@allowlist_group.command("add")
@data_options
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes",
    "hashes_file",
    type=INPUT_FILE,
    help="Read the pictures' hashes from this JSON Lines file (matcher hash output), or '-'.",
)
@click.option("--label", required=True, help="What the picture is (at most 100 characters).")
@click.option(
    "--profile",
    default="enroll",
    show_default=True,
    help="Hashing profile for image paths: 'enroll' adds every view a bank item would hold.",
)
def allowlist_add(
    data: str,
    store_url: str | None,
    paths: tuple[str, ...],
    hashes_file: str | None,
    label: str,
    profile: str,
) -> None:
    """Add pictures to the allowlist (hashed here; the pictures never leave this machine).

    Each picture is hashed as an enrollment would hash it (PDQ views, pHash, file digests),
    so that a copy of it is refused whichever view it shares. Prints one JSON line: how many
    entries were added and how many were held already.

    \b
    Examples:
      matcher allowlist add --label "meme: distracted boyfriend" meme.jpg meme-crop.png
      matcher hash --profile enroll memes/ > m.jsonl
      matcher allowlist add --label "memes, batch 3" --hashes m.jsonl
    """
    from matcher.principal import Principal

    hashes = []
    for result in hashed_files(paths, hashes_file, profile=profile):
        hashes += list(result.to_item().hashes)
    with _bank(data, store_url) as bank:
        added = bank.allowlist_add(hashes, label=label, by=Principal.operator("cli"))
    echo_json(
        {"added": added.added, "existing": added.existing, "ids": [e.id for e in added.entries]}
    )


@allowlist_group.command("list")
@data_options
def allowlist_list(data: str, store_url: str | None) -> None:
    """List allowlist entries as JSON lines: id, signal, label, source, date (never values).

    \b
    Example:
      matcher allowlist list --data ./matcher-data
    """
    from matcher.principal import Principal

    with _bank(data, store_url) as bank:
        for entry in bank.allowlist_entries(by=Principal.operator("cli")):
            echo_json(_entry_json(entry))


@allowlist_group.command("remove")
@data_options
@click.argument("entry_id", type=int)
def allowlist_remove(data: str, store_url: str | None, entry_id: int) -> None:
    """Remove one allowlist entry by id (see 'matcher allowlist list').

    \b
    Example:
      matcher allowlist remove 152
    """
    from matcher.principal import Principal

    with _bank(data, store_url) as bank:
        echo_json(_entry_json(bank.allowlist_remove(entry_id, by=Principal.operator("cli"))))


@allowlist_group.command("seed")
@data_options
def allowlist_seed(data: str, store_url: str | None) -> None:
    """Add the generated seed (uniform colours, gradients, grids, checkerboards, stripes)
    again: entries removed come back, held ones are counted.

    \b
    Example:
      matcher allowlist seed --data ./matcher-data
    """
    from matcher.principal import Principal

    with _bank(data, store_url) as bank:
        added = bank.allowlist_seed(by=Principal.operator("cli"))
    echo_json({"added": added.added, "existing": added.existing})
