"""``matcher match``: hash images here and ask the service whether they match (partners)."""

from __future__ import annotations

from typing import Any

import click

from matcher.cli._common import Remote, echo_json, remote_options
from matcher.cli._inputs import record_hashes, records


@click.command("match")
@remote_options
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes", "hashes_file", help="Match the JSON lines of `matcher hash` ('-': stdin)."
)
@click.option("--max-distance", type=int, help="A stricter match distance for every hash.")
@click.option(
    "--profile",
    type=click.Choice(["plain", "query"]),
    default="plain",
    show_default=True,
    help="query: also ask about each image's detection views (trimmed borders, tiles; ~25).",
)
def match_command(
    remote: Remote,
    paths: tuple[str, ...],
    hashes_file: str | None,
    max_distance: int | None,
    profile: str,
) -> None:
    """Hash images on this machine and ask the service whether they match (partners).

    Each image is sent as its PDQ hash with its 8 rotations and flips, its pHash and its file
    digests. Writes one JSON line per image: its path and its matches (opaque ids, signal,
    distance), best first.

    \b
    Examples:
      matcher match upload.jpg
      matcher hash --dihedral uploads/ | matcher match --hashes -
    """
    from matcher.client import Query

    found = list(records(paths, hashes_file, dihedral=True, profile=profile))
    with remote.client() as client:
        batch: list[tuple[dict, Any]] = []

        def flush() -> None:
            results = client.match([q for _, q in batch])
            for (record, _), result in zip(batch, results, strict=True):
                echo_json({"path": record.get("path"), "matches": [
                    {"match_id": m.match_id, "signal": m.signal, "distance": m.distance}
                    for m in result.matches]})  # fmt: skip
            batch.clear()

        for record in found:
            if record.get("error"):
                echo_json({"path": record.get("path"), "error": record["error"]})
                continue
            batch.append((record, Query(record_hashes(record, variants=True), max_distance)))
            if len(batch) == 500:
                flush()
        if batch:
            flush()
