"""``matcher match``: hash images here and ask the service whether they match (partners)."""

from __future__ import annotations

import itertools

import click

from matcher.cli._common import INPUT_FILE, Remote, echo_json, hashed_files, remote_options

_BATCH = 500


@click.command("match")
@remote_options
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes",
    "hashes_file",
    type=INPUT_FILE,
    help="Match the JSON lines of `matcher hash` ('-': stdin).",
)
@click.option(
    "--max-distance",
    type=int,
    help="A stricter match distance for every hash (only for keys granted exact distances).",
)
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

    Each image is sent as one query: its PDQ hash with its 8 rotations and flips (and with
    --profile query its detection views), its pHash and its file digests. Writes one JSON line
    per image: its path and its matches, one per matched enrolled image, best first: an opaque
    item_id (for feedback), its band (strong or weak) and signal, and how many of the image's
    hashes hit it; the exact distance only for keys an admin granted it (else null).

    \b
    Examples:
      matcher match upload.jpg
      matcher hash --dihedral uploads/ | matcher match --hashes -
    """
    files = hashed_files(paths, hashes_file, dihedral=True, profile=profile)
    with remote.client() as client:
        while batch := list(itertools.islice(files, _BATCH)):
            asked = [(r, r.to_query(max_distance=max_distance)) for r in batch]
            queries = [q for _, q in asked if q is not None]
            answers = iter(client.match(queries) if queries else [])
            for result, query in asked:
                if not result.ok:
                    echo_json({"path": result.path, "error": result.error})
                    continue
                found = next(answers).matches if query is not None else []
                echo_json(
                    {
                        "path": result.path,
                        "matches": [
                            {
                                "item_id": m.item_id,
                                "band": str(m.band),
                                "distance": m.distance,
                                "signal": m.signal.name,
                                "hits": m.hits,
                            }
                            for m in found
                        ],
                    }
                )
