"""The ``matcher`` command: a thin layer over the library.

Each command parses its arguments, calls one library function, and turns a library exception into
a one-line message with a non-zero exit status (1 for a failure of the work, 2 for bad usage).
Every command's help ends with an example; a test checks that each one is in the README.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import click

from matcher import __version__
from matcher.errors import MatcherError

__all__ = ["main"]


def _progress_enabled(flag: bool | None) -> bool:
    # A bar on a terminal, nothing in a pipe or a log file, unless the user says otherwise.
    return sys.stderr.isatty() if flag is None else flag


def _read_paths(paths: Iterable[str]) -> Iterator[str]:
    for p in paths:
        if p == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        else:
            yield p


class _Writer:
    """Writes records as JSON Lines or CSV, flushing each line so a pipe sees progress."""

    def __init__(self, out: IO[str], fmt: str, columns: list[str]) -> None:
        self.out = out
        self.fmt = fmt
        self.columns = columns
        self._csv: csv.DictWriter[str] | None = None
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is not None:
            flat = dict(record)
            for name, value in flat.pop("pdq_dihedral", {}).items():
                flat[f"pdq_{name}"] = value
            if "pdq_views" in flat:
                # A profile's views vary in number (flat crops are dropped): one cell of
                # space-separated name=hex pairs keeps the CSV rectangular.
                flat["pdq_views"] = " ".join(f"{k}={v}" for k, v in flat["pdq_views"].items())
            self._csv.writerow(flat)
        else:
            self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matcher")
def main() -> None:
    """matcher: find re-uploads of intimate images shared without consent, from hashes alone.

    Images are hashed on your own machine; only hashes ever leave it.

    \b
    Example:
      matcher hash ~/Pictures/to-protect
    """


@main.command("hash")
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
    type=click.Choice(["plain", "enroll", "query"]),
    default="plain",
    show_default=True,
    help="Also output named PDQ views (pdq_views) that survive crops, flips, borders and "
    "screenshots: 'enroll' for images to protect, 'query' for uploads to check.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Hash in N processes (default: number of CPUs).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse images with more pixels than this (decompression-bomb guard; default 150M).",
)
@click.option(
    "--all-files", is_flag=True, help="In folders, try every file, not only image/video names."
)
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8", lazy=False),
    default="-",
    help="Write here instead of standard output.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress bar on or off (default: on when stderr is a terminal).",
)
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
    from tqdm import tqdm

    from matcher.hashing import DEFAULT_MAX_PIXELS, DIHEDRAL_NAMES, check_signals, hash_files

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
    writer = _Writer(output, fmt, columns)

    show = _progress_enabled(progress)
    todo: Iterable[str] = _read_paths(paths)
    total = None
    if show:
        # Knowing the total gives the bar a rate and an ETA; only worth the memory on a terminal.
        from matcher.hashing import iter_files

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
    with tqdm(
        total=total, disable=not show, unit="img", file=sys.stderr, dynamic_ncols=True
    ) as bar:
        for result in results:
            writer.write(result.to_record())
            done += 1
            failed += not result.ok
            bar.update()
    if failed:
        click.echo(f"matcher hash: {failed} of {done} files could not be hashed", err=True)
        sys.exit(1)
    if done == 0:
        click.echo("matcher hash: no files found", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
