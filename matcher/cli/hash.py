"""``matcher hash``: hash image files on this machine (nothing leaves it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

import click

from matcher.cli._common import (
    Writer,
    local_hashing_options,
    progress_enabled,
    progress_option,
    read_paths,
)
from matcher.errors import MatcherError


@click.command("hash")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Output format: one JSON object per line, or CSV with a header.",
)
@click.option(
    "--signals",
    default="pdq,phash,md5,sha256",
    show_default=True,
    help="Comma-separated signals to compute.",
)
@click.option(
    "--dihedral", is_flag=True, help="Also output the PDQ hashes of the 8 rotations/flips."
)
@click.option(
    "--profile",
    type=click.Choice(
        ["plain", "enroll", "enroll-wide", "enroll-compact", "enroll-light", "query", "query-wide"]
    ),
    default="plain",
    show_default=True,
    help="Also output named PDQ views (pdq_views) that survive crops, flips, borders and "
    "screenshots: 'enroll' for images to protect, 'query' for uploads to check.",
)
@local_hashing_options
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8", lazy=False),
    default="-",
    help="Write here instead of standard output.",
)
@progress_option
def hash_command(
    paths: tuple[str, ...],
    fmt: str,
    signals: str,
    dihedral: bool,
    profile: str,
    jobs: int | None,
    max_pixels: int | None,
    all_files: bool,
    output: IO[str],
    progress: bool | None,
) -> None:
    """Hash image files (and folders, recursively) on this machine.

    Writes one line per file: its path, each signal's hex, the PDQ quality (0-100) and, with
    --dihedral, the PDQ hashes of its rotations and flips. With --profile enroll or query, it
    also writes "pdq_views": named PDQ hashes of crops, rotations, trimmed borders and tiles
    (see README, "Detection profiles"). A file that cannot be hashed gets a
    line with an "error" field; the others go on, and the exit status is 1 at the end. Use "-"
    to read paths from standard input, one per line. Videos get MD5 and SHA-256 only.

    \b
    Examples:
      matcher hash photo.jpg
      matcher hash --dihedral -j 4 ~/Pictures > hashes.jsonl
      matcher hash --profile enroll ~/Pictures/to-protect > enroll.jsonl
      find /data -name '*.jpg' | matcher hash --format csv - > hashes.csv
    """
    # The hashing modules only (numpy, PIL, pdqhash): no tqdm, no gRPC, no scipy.
    from matcher.hashing.compute import DIHEDRAL_NAMES
    from matcher.hashing.decode import DEFAULT_MAX_PIXELS
    from matcher.hashing.files import check_signals, hash_files, iter_files

    try:
        wanted = check_signals(signals.split(","))
    except MatcherError as exc:
        raise click.BadParameter(str(exc), param_hint="--signals") from None
    columns = ["path"]
    for name in wanted:
        columns.append(name)
        if name == "pdq":
            columns.append("pdq_quality")
    if dihedral:
        columns += [f"pdq_{n}" for n in DIHEDRAL_NAMES if n != "original"]
    if profile != "plain":
        columns.append("pdq_views")
    columns += ["error", "error_kind"]
    writer = Writer(output, fmt, columns)

    show = progress_enabled(progress)
    todo: Iterable[str] = read_paths(paths)
    total = None
    if show:
        # Knowing the total gives the bar a rate and an ETA; only worth the memory on a terminal.
        todo = list(iter_files(todo, all_files=all_files))
        total = len(todo)
    results = hash_files(
        todo,
        signals=wanted,
        dihedral=dihedral,
        profile=profile,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        jobs=jobs or os.cpu_count() or 1,
        all_files=all_files,
    )
    failed = done = 0
    bar = _bar(total) if show else None
    try:
        for result in results:
            writer.write(result.to_record())
            done += 1
            failed += not result.ok
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    if failed:
        click.echo(f"matcher hash: {failed} of {done} files could not be hashed", err=True)
        sys.exit(1)
    if done == 0:
        click.echo("matcher hash: no files found", err=True)
        sys.exit(1)


def _bar(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)
