"""``matcher enroll``: hash images here and enroll only their hashes into a case."""

from __future__ import annotations

import sys

import click

from matcher.cli._common import Remote, echo_json, remote_options
from matcher.cli._inputs import record_hashes, records


@click.command("enroll")
@remote_options
@click.argument("case")
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes", "hashes_file", help="Enroll the JSON lines of `matcher hash` ('-': stdin)."
)
@click.option(
    "--profile",
    type=click.Choice(["plain", "enroll"]),
    default="plain",
    show_default=True,
    help="enroll: also the detection views of each image (crops, turns; ~223 PDQ hashes).",
)
def enroll_command(
    remote: Remote,
    case: str,
    paths: tuple[str, ...],
    hashes_file: str | None,
    profile: str,
) -> None:
    """Hash images on this machine and enroll only their hashes into a case (practitioners).

    Each image gives its PDQ hash (when its quality is at least 50), pHash, MD5 and SHA-256.
    Nothing is sent if any file cannot be hashed: fix or remove it and run again (re-sending is
    safe: hashes already in the case are skipped).

    \b
    Examples:
      matcher enroll K7QP-2MXR-9TDA photo1.jpg photo2.heic
      matcher hash ~/to-protect > h.jsonl && matcher enroll K7QP-2MXR-9TDA --hashes h.jsonl
    """
    from matcher.signals import PDQ

    hashes, failed, low = [], 0, 0
    for record in records(paths, hashes_file, dihedral=False, profile=profile):
        if record.get("error"):
            failed += 1
            click.echo(f"matcher: {record['path']}: {record['error']}", err=True)
            continue
        quality = record.get("pdq_quality")
        if record.get("pdq") and quality is not None and quality < (PDQ.quality_floor or 0):
            # A flat image's PDQ collides with others: enroll its other signals only.
            low += 1
            record = {k: v for k, v in record.items() if k != "pdq"}
        hashes += record_hashes(record, variants=False)
    if failed:
        click.echo(f"matcher: {failed} files could not be hashed; nothing was enrolled", err=True)
        sys.exit(1)
    if low:
        click.echo(
            f"matcher: {low} images too flat for PDQ; their other hashes are enrolled", err=True
        )
    if not hashes:
        raise click.UsageError("no hashes to enroll")
    with remote.client() as client:
        for start in range(0, len(hashes), 1000):
            result = client.add_hashes(case, hashes[start : start + 1000])
    echo_json({"case": case, "hash_count": result.hash_count, "sent": len(hashes)})
