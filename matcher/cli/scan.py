"""``matcher scan``: scan a back catalogue against the service, resumably."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import click

from matcher.cli._common import (
    Remote,
    local_hashing_options,
    progress_enabled,
    read_paths,
    remote_options,
)
from matcher.errors import MatcherError


def _interruptible(
    work: Callable[[], Any], on_interrupt: Callable[[], None], grace: float = 15.0
) -> Any:
    """Run ``work`` in a thread and wait for it, so that Ctrl-C (or SIGTERM) lands here, in the
    main thread, never half-way through one of the work's steps (a commit to the report).

    On a signal: call ``on_interrupt`` (which makes the work wind down), give the work
    ``grace`` seconds to finish (a second Ctrl-C cuts that short), then raise
    ``KeyboardInterrupt(signal number, whether the work finished)``.
    """
    import contextlib
    import threading

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    thread = threading.Thread(target=target, name="matcher-work", daemon=True)
    try:
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.2)
        except KeyboardInterrupt as exc:
            signum = exc.args[0] if exc.args else signal.SIGINT
            on_interrupt()
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
                thread.join(grace)
            raise KeyboardInterrupt(signum, not thread.is_alive()) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _count_in_background(count: Callable[[], int], bar: Any) -> None:
    """Set the bar's total once ``count`` returns: the bar gets an ETA without the file list
    ever being held in memory (the count walks the inputs a second time, in a thread)."""
    import threading

    def run() -> None:
        try:
            bar.total = count()
            bar.refresh()
        except Exception:  # a count is a nicety: never let it disturb the scan
            pass

    threading.Thread(target=run, name="matcher-scan-count", daemon=True).start()


@click.command("scan")
@remote_options
@click.argument("paths", nargs=-1)
@click.option(
    "--files-from",
    type=click.File("r", encoding="utf-8"),
    help="Also scan the paths or URLs listed in FILE, one per line ('-': standard input).",
)
@click.option(
    "--hashes",
    "hashes_file",
    type=click.File("r", encoding="utf-8"),
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
    type=click.Choice(["plain", "query"]),
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
    files_from: IO[str] | None,
    hashes_file: IO[str] | None,
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
    per match (path, match_id, signal, distance) and one per file that could not be hashed
    (error); the summary goes to stderr. With -o, the job is resumable: after Ctrl-C or a
    crash, run the same command again and it continues where it stopped, with no file
    reported twice and none skipped.

    \b
    Examples:
      matcher scan -o report.jsonl /data/photos
      find /data -name '*.jpg' | matcher scan -j 8 -o report.csv --format csv -
      matcher scan --dask tcp://10.0.0.5:8786 -o report.jsonl s3://bucket/uploads/
      matcher hash uploads/ > h.jsonl && matcher scan --hashes h.jsonl -o report.jsonl
    """
    import itertools

    from tqdm import tqdm

    from matcher.hashing import DEFAULT_MAX_PIXELS, check_signals
    from matcher.scan import (
        HashOptions,
        Journal,
        RetryPolicy,
        Service,
        iter_inputs,
        read_hash_records,
        read_lines,
        scan,
        scan_dask,
    )

    try:
        wanted = tuple(check_signals(signals.split(",")))
    except MatcherError as exc:
        raise click.BadParameter(str(exc), param_hint="--signals") from None
    if hashes_file is not None and (paths or files_from is not None):
        raise click.UsageError("give image paths (or --files-from) or --hashes, not both")
    if hashes_file is None and not paths and files_from is None:
        raise click.UsageError("give image paths, --files-from FILE or --hashes FILE")
    if hashes_file is not None and dask_address:
        raise click.UsageError("--hashes has nothing to hash: run it without --dask")
    if state and not output:
        raise click.UsageError("--state needs -o/--output: only a report file can be resumed")
    options = HashOptions(
        signals=wanted,
        dihedral=dihedral,
        max_distance=max_distance,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        profile=profile,
    )
    # What the job computes: a later run continues it only if all of this is the same.
    job = {
        "paths": list(paths),
        "files_from": getattr(files_from, "name", None),
        "hashes": getattr(hashes_file, "name", None),
        "signals": list(wanted),
        "dihedral": dihedral,
        "max_distance": max_distance,
        "profile": profile,
        "max_pixels": options.max_pixels,
        "all_files": all_files,
        "clean_rows": clean_rows,
    }
    journal = Journal(output or sys.stdout, fmt=fmt, job=job, state=state, restart=restart)

    def inputs() -> Iterator[str]:
        listed = itertools.chain(
            read_paths(paths), read_lines(files_from) if files_from is not None else ()
        )
        return iter_inputs(listed, all_files=all_files)

    show = progress_enabled(progress)
    bar = tqdm(
        disable=not show,
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        initial=journal.totals.scanned,
    )
    # Standard input can be read once only: no total (and no ETA) for "-".
    countable = "-" not in paths and (files_from is None or files_from.name != "-")
    if show and hashes_file is None and countable:
        count_files = files_from.name if files_from is not None else None

        def count() -> int:
            n = sum(1 for _ in iter_inputs(paths, all_files=all_files))
            if count_files:
                with open(count_files, encoding="utf-8") as listing:
                    n += sum(1 for _ in iter_inputs(read_lines(listing), all_files=all_files))
            return n

        _count_in_background(count, bar)

    def retried(exc: Exception, wait: float) -> None:
        bar.clear()
        click.echo(f"matcher scan: {exc}; retrying in {wait:.1f} s", err=True)

    retry = RetryPolicy()

    def run() -> Any:
        if dask_address:
            try:
                from distributed import Client as DaskClient
            except ImportError:
                raise click.UsageError("--dask needs Dask: pip install 'matcher[dask]'") from None
            from pathlib import Path

            roots = Path(remote.tls_ca).read_bytes() if remote.tls_ca else None
            try:
                with DaskClient(dask_address, timeout=remote.timeout) as dask_client:
                    return scan_dask(
                        dask_client,
                        inputs(),
                        Service(remote.server, remote.api_key, roots),
                        journal,
                        options=options,
                        partition_size=partition_size,
                        batch_size=batch_size,
                        clean_rows=clean_rows,
                        retry=retry,
                        on_commit=bar.update,
                    )
            except MatcherError:
                raise
            except Exception as exc:
                # The cluster's own failures (scheduler unreachable, a task that killed its
                # workers too often): one line, as for any other stop.
                raise MatcherError(f"the Dask job failed: {type(exc).__name__}: {exc}") from exc
        with remote.client() as client:
            return scan(
                None if hashes_file is not None else inputs(),
                client,
                journal,
                options=options,
                hashed=read_hash_records(hashes_file, hashes_file.name)
                if hashes_file is not None
                else None,
                jobs=jobs or os.cpu_count() or 1,
                batch_size=batch_size,
                clean_rows=clean_rows,
                retry=retry,
                on_commit=bar.update,
                on_retry=retried,
            )

    try:
        # On Ctrl-C the journal is abandoned first: a commit in progress finishes, none starts
        # after it, so the report ends on a whole commit and the state agrees with it.
        summary = _interruptible(run, journal.abandon)
    except KeyboardInterrupt as stop:
        signum, finished = stop.args
        bar.close()
        where = f" (-o {output}): run the same command to continue" if output else ""
        click.echo(
            f"matcher scan: interrupted; {journal.totals.scanned} files are in the report{where}",
            err=True,
        )
        if not finished:
            # Work still stuck after the grace period (a hung read, say): nothing it holds is
            # needed any more, the report and the state are closed.
            sys.stderr.flush()
            os._exit(128 + signum)
        sys.exit(128 + signum)
    except MatcherError:
        bar.close()
        journal.close()
        if output:
            click.echo(
                f"matcher scan: stopped after {journal.totals.scanned} files; the state is "
                "saved: run the same command to continue",
                err=True,
            )
        raise
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
