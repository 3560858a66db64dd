"""``matcher scan``: scan a back catalogue against the service, resumably.

The job itself (its identity, inputs, counting, local or Dask run, Ctrl-C handling) is
``matcher.scan.ScanJob``; this command turns options into one and draws the progress bar.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

import click

from matcher.cli._common import (
    INPUT_FILE,
    Remote,
    local_hashing_options,
    progress_enabled,
    remote_options,
)
from matcher.errors import InvalidInput, MatcherError


@click.command("scan")
@remote_options
@click.argument("paths", nargs=-1)
@click.option(
    "--files-from",
    metavar="FILE",
    type=INPUT_FILE,
    help="Also scan the paths or URLs listed in FILE, one per line ('-': standard input).",
)
@click.option(
    "--hashes",
    "hashes_file",
    metavar="FILE",
    type=INPUT_FILE,
    help="Scan the JSON lines of `matcher hash` instead of images ('-': standard input).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the report to FILE (resumable) instead of standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Report format: JSON Lines, or CSV with a header.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="The state file that makes the job resumable (default: OUTPUT.state).",
)
@click.option("--restart", is_flag=True, help="Discard an earlier run's report and state.")
@click.option(
    "--clean-rows", is_flag=True, help="Also write a row for each file that matched nothing."
)
@click.option(
    "--signals",
    default="pdq,phash,md5,sha256",
    show_default=True,
    help="Comma-separated signals to compute and send.",
)
@click.option(
    "--dihedral/--no-dihedral",
    default=True,
    show_default=True,
    help="Also send the PDQ hashes of the 7 other rotations and flips (finds mirrored copies).",
)
@click.option("--max-distance", type=int, help="A stricter match distance for every hash.")
@click.option(
    "--profile",
    type=click.Choice(["plain", "query", "query-wide"]),
    default="plain",
    show_default=True,
    help="query: also ask about each image's detection views (trimmed borders, tiles; ~25).",
)
@local_hashing_options
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=256,
    show_default=True,
    help="Images per StreamMatch message.",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS",
    help="Hash and match on the Dask cluster with this scheduler (e.g. tcp://10.0.0.5:8786).",
)
@click.option(
    "--partition-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="With --dask: files per task.",
)
@click.option(
    "--summary-json",
    type=click.File("w", encoding="utf-8"),
    help="Also write the summary as one JSON object to FILE ('-': standard output).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress bar on or off (default: on when stderr is a terminal).",
)
def scan_command(
    remote: Remote,
    paths: tuple[str, ...],
    files_from: str | None,
    hashes_file: str | None,
    output: str | None,
    fmt: str,
    state: str | None,
    restart: bool,
    clean_rows: bool,
    signals: str,
    dihedral: bool,
    max_distance: int | None,
    profile: str,
    jobs: int | None,
    max_pixels: int | None,
    all_files: bool,
    batch_size: int,
    dask_address: str | None,
    partition_size: int,
    summary_json: IO[str] | None,
    progress: bool | None,
) -> None:
    """Scan a back catalogue: hash images where they live, ask the service, report matches.

    PATHS are files, folders (recursive), fsspec URLs (file://, s3://... with the fsspec
    backend installed) or "-" (paths from standard input); --files-from reads a listing;
    --hashes takes `matcher hash` output instead. Only hashes are sent. The report has one row
    per matched image (path, item_id, signal, distance, hits) and one per file that could not
    be hashed (error); the summary goes to stderr. With -o, the job is resumable: after Ctrl-C
    or a crash, run the same command again and it continues where it stopped, with no file
    reported twice and none skipped.

    \b
    Examples:
      matcher scan -o report.jsonl /data/photos
      find /data -name '*.jpg' | matcher scan -j 8 -o report.csv --format csv -
      matcher scan --dask tcp://10.0.0.5:8786 -o report.jsonl s3://bucket/uploads/
      matcher hash uploads/ > h.jsonl && matcher scan --hashes h.jsonl -o report.jsonl
    """
    from pathlib import Path

    from matcher.hashing.decode import DEFAULT_MAX_PIXELS
    from matcher.hashing.files import check_signals
    from matcher.scan import (
        HashOptions,
        Interrupted,
        ScanJob,
        Service,
        count_in_background,
        run_interruptibly,
    )

    try:
        wanted = tuple(check_signals(signals.split(",")))
    except InvalidInput as exc:
        raise click.BadParameter(exc.reason, param_hint="--signals") from None
    if state and not output:
        raise click.UsageError("--state needs -o/--output: only a report file can be resumed")
    options = HashOptions(
        signals=wanted,
        dihedral=dihedral,
        max_distance=max_distance,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        profile=profile,
    )
    try:
        job = ScanJob(
            paths=paths,
            files_from=files_from,
            hashes=hashes_file,
            options=options,
            all_files=all_files,
            clean_rows=clean_rows,
            jobs=jobs,
            batch_size=batch_size,
            dask=dask_address,
            partition_size=partition_size,
        )
    except InvalidInput as exc:
        raise click.UsageError(exc.reason) from None
    journal = job.journal(output, fmt=fmt, state=state, restart=restart)
    bar = _bar(progress_enabled(progress), journal.totals.scanned)
    if bar is not None:
        count_in_background(job.count, lambda n: _set_total(bar, n))

    def retried(exc: Exception, wait: float) -> None:
        if bar is not None:
            bar.clear()
        click.echo(f"matcher scan: {exc}; retrying in {wait:.1f} s", err=True)

    service = Service(
        remote.server,
        remote.api_key,
        Path(remote.tls_ca).read_bytes() if remote.tls_ca else None,
    )

    def run() -> Any:
        return job.run(
            journal,
            service,
            timeout=remote.timeout,
            on_commit=bar.update if bar is not None else None,
            on_retry=retried,
        )

    try:
        # On Ctrl-C the journal is abandoned first: a commit in progress finishes, none starts
        # after it, so the report ends on a whole commit and the state agrees with it.
        summary = run_interruptibly(run, journal.abandon)
    except Interrupted as stop:
        if bar is not None:
            bar.close()
        where = f" (-o {output}): run the same command to continue" if output else ""
        click.echo(
            f"matcher scan: interrupted; {journal.totals.scanned} files are in the report{where}",
            err=True,
        )
        if not stop.finished:
            # Work still stuck after the grace period (a hung read, say): nothing it holds is
            # needed any more, the report and the state are closed.
            sys.stderr.flush()
            os._exit(128 + stop.signum)
        sys.exit(128 + stop.signum)
    except MatcherError:
        if bar is not None:
            bar.close()
        journal.close()
        if output:
            click.echo(
                f"matcher scan: stopped after {journal.totals.scanned} files; the state is "
                "saved: run the same command to continue",
                err=True,
            )
        raise
    if bar is not None:
        bar.close()
    journal.close()
    click.echo(
        f"matcher scan: {summary.scanned} files scanned, {summary.matched} matched, "
        f"{summary.failed} failed, {summary.images_per_second:,.1f} images/s"
        + (f"; {summary.skipped} already done by an earlier run" if summary.skipped else ""),
        err=True,
    )
    if summary_json is not None:
        summary_json.write(json.dumps(summary.as_dict()) + "\n")
        summary_json.flush()


def _bar(show: bool, initial: int) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(unit="img", file=sys.stderr, dynamic_ncols=True, initial=initial)


def _set_total(bar: Any, total: int) -> None:
    bar.total = total
    bar.refresh()
