"""``matcher enroll``: hash images here and enroll only their hashes into a case, one item
per image."""

from __future__ import annotations

import sys

import click

from matcher.cli._common import INPUT_FILE, Remote, echo_json, hashed_files, remote_options


@click.command("enroll")
@remote_options
@click.argument("case")
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes",
    "hashes_file",
    type=INPUT_FILE,
    help="Enroll the JSON lines of `matcher hash` ('-': stdin).",
)
@click.option(
    "--profile",
    type=click.Choice(["plain", "enroll", "enroll-wide", "enroll-compact", "enroll-light"]),
    default="plain",
    show_default=True,
    help="enroll: also the detection views of each image (crops, turns, mirrors; up to 99 PDQ "
    "hashes; enroll-wide: 223).",
)
@click.option(
    "--label",
    help="A note stored with each image of this call (e.g. 'photo 2'); never a file name.",
)
def enroll_command(
    remote: Remote,
    case: str,
    paths: tuple[str, ...],
    hashes_file: str | None,
    profile: str,
    label: str | None,
) -> None:
    """Hash images on this machine and enroll only their hashes into a case (practitioners).

    Each image becomes one item of the case, holding all its hashes: PDQ (and with --profile
    enroll its detection views) where their quality is at least 50, pHash, MD5 and SHA-256. A
    flat image (PDQ quality below 50) is enrolled by its other hashes and named on stderr. No
    file name is sent: --label stores a note of your choice instead. Nothing is sent if any
    file cannot be hashed: fix or remove it and run again. Re-sending is safe: an image the
    case already holds is not added twice. Prints the items (by number, for `matcher case
    withdraw --item N`) and the case's totals.

    \b
    Examples:
      matcher enroll K7QP-2MXR-9TDA photo1.jpg photo2.heic
      matcher enroll K7QP-2MXR-9TDA --profile enroll --label "from the chat" photo3.jpg
      matcher hash ~/to-protect > h.jsonl && matcher enroll K7QP-2MXR-9TDA --hashes h.jsonl
    """
    from matcher.errors import InvalidInput

    files, items, failed = [], [], 0
    for result in hashed_files(paths, hashes_file, profile=profile):
        if not result.ok:
            failed += 1
            click.echo(f"matcher: {result.path}: {result.error}", err=True)
            continue
        try:
            items.append(result.to_item(label=label))
        except InvalidInput as exc:
            failed += 1
            click.echo(f"matcher: {result.path}: {exc.reason}", err=True)
            continue
        files.append(result.path)
        if result.flat:
            click.echo(
                f"matcher: {result.path}: too flat for PDQ (quality "
                f"{result.hashes['pdq'].quality}); enrolled by its pHash and digests",
                err=True,
            )
    if failed:
        click.echo(f"matcher: {failed} files could not be hashed; nothing was enrolled", err=True)
        sys.exit(1)
    if not items:
        raise click.UsageError("no images to enroll")
    from matcher.errors import Allowlisted

    try:
        enrolled = remote.call(lambda c: c.enroll(case, items))
    except Allowlisted as exc:
        # Name the file (only here: the service never sees file names).
        index = exc.field.removeprefix("items[").split("]")[0]
        where = files[int(index)] if index.isdigit() and int(index) < len(files) else exc.field
        click.echo(f"matcher: {where}: {exc.reason}", err=True)
        sys.exit(1)
    echo_json(
        {
            "case": enrolled.case_number,
            "items": [
                {"path": path, "item": item.number, "hash_count": item.hash_count}
                for path, item in zip(files, enrolled.items, strict=True)
            ],
            "added": enrolled.added,
            "existing": enrolled.existing,
            "item_count": enrolled.item_count,
            "hash_count": enrolled.hash_count,
        }
    )
