"""A scan job as one value: what it reads, how it hashes and asks, and how it runs.

The ``matcher scan`` command only turns its options into a ``ScanJob`` and draws the progress
bar; everything else is here, for the Python API as much as for the CLI:

- the job's **identity** (``ScanJob.identity``): a later run continues a report only if it is
  the same job, so the journal stores it and refuses another one;
- its **inputs**, streamed (paths, a listing, or ``matcher hash`` lines) and **counted** in the
  background for a progress bar that must never hold the file list;
- **where it runs**: this machine (``scan``) or a Dask cluster (``scan_dask``), the Dask client
  opened and closed here, and the cluster's own failures turned into one ``MatcherError``;
- **stopping**: ``run_interruptibly`` runs the work in a thread so that Ctrl-C or SIGTERM lands
  between two commits of the report, never in the middle of one.

>>> job = ScanJob(paths=("/data/photos",), jobs=4)               # doctest: +SKIP
>>> with Journal("report.jsonl", job=job.identity()) as journal:  # doctest: +SKIP
...     summary = job.run(journal, Service("127.0.0.1:50051", "mk_..."))
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from matcher.errors import InvalidInput, MatcherError
from matcher.scan.cluster import Service, scan_dask
from matcher.scan.journal import Journal
from matcher.scan.local import ScanSummary, scan
from matcher.scan.sources import HashOptions, iter_inputs, read_hash_records, read_lines
from matcher.scan.stream import RetryPolicy

__all__ = ["Interrupted", "ScanJob", "count_in_background", "run_interruptibly"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ScanJob:
    """One scan: its inputs and options. Checked when made (``InvalidInput``).

    Inputs are ``paths`` (files, folders, fsspec URLs; "-" reads paths from standard input)
    and/or ``files_from`` (a listing, one path or URL per line; "-" standard input); or
    ``hashes`` instead (a file of ``matcher hash`` JSON lines; "-" standard input).
    ``dask`` is a scheduler address: hash and match on that cluster. ``jobs`` (default: one
    per CPU) is the number of hashing processes on this machine.
    """

    paths: tuple[str, ...] = ()
    files_from: str | None = None
    hashes: str | None = None
    options: HashOptions = field(default_factory=HashOptions)
    all_files: bool = False
    clean_rows: bool = False
    jobs: int | None = None
    batch_size: int = 256
    dask: str | None = None
    partition_size: int = 500

    def __post_init__(self) -> None:
        if self.hashes is not None and (self.paths or self.files_from is not None):
            raise InvalidInput(
                "give image paths (or a listing) or hashes, not both", field="hashes"
            )
        if self.hashes is None and not self.paths and self.files_from is None:
            raise InvalidInput("give image paths, a listing or hashes", field="paths")
        if self.hashes is not None and self.dask:
            raise InvalidInput("hashes have nothing to hash: scan them without Dask", field="dask")
        if not 1 <= self.batch_size <= 1000:
            raise InvalidInput("batch_size must be between 1 and 1000", field="batch_size")

    def identity(self) -> dict[str, Any]:
        """What the job computes: a later run continues its report only if all of this is the
        same (the journal stores it and refuses another job's)."""
        return {
            "paths": list(self.paths),
            "files_from": self.files_from,
            "hashes": self.hashes,
            "signals": list(self.options.signals),
            "dihedral": self.options.dihedral,
            "max_distance": self.options.max_distance,
            "profile": self.options.profile,
            "max_pixels": self.options.max_pixels,
            "all_files": self.all_files,
            "clean_rows": self.clean_rows,
        }

    def journal(
        self,
        report: str | os.PathLike[str] | IO[str] | None,
        *,
        fmt: str = "jsonl",
        state: str | os.PathLike[str] | None = None,
        restart: bool = False,
    ) -> Journal:
        """The journal of this job: a resumable report file, or a stream (default stdout)."""
        if state is not None and (report is None or hasattr(report, "write")):
            raise InvalidInput("a state file needs a report file: only a file can be resumed")
        return Journal(
            report if report is not None else sys.stdout,
            fmt=fmt,
            job=self.identity(),
            state=state,
            restart=restart,
        )

    @property
    def reads_stdin(self) -> bool:
        return "-" in self.paths or self.files_from == "-" or self.hashes == "-"

    def inputs(self) -> Iterator[str]:
        """The files to scan, streamed in a stable order (folders walked lazily)."""
        listed: Iterator[str] = itertools.chain(
            _read_paths(self.paths), _listing(self.files_from) if self.files_from else ()
        )
        return iter_inputs(listed, all_files=self.all_files)

    def count(self) -> int | None:
        """How many files the job has (walking the inputs once more), or None when it reads
        standard input (which can be read once only) or hashes."""
        if self.reads_stdin or self.hashes is not None:
            return None
        return sum(1 for _ in self.inputs())

    def run(
        self,
        journal: Journal,
        service: Service,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_commit: Callable[[int], None] | None = None,
        on_retry: Callable[[Exception, float], None] | None = None,
    ) -> ScanSummary:
        """Run (or resume) the job against the service, writing through ``journal``."""
        retry = retry or RetryPolicy()
        if self.dask:
            return self._run_dask(journal, service, timeout, retry, on_commit)
        from matcher.client import Client

        with Client(
            service.target,
            service.api_key or os.environ.get("MATCHER_API_KEY"),
            timeout=timeout,
            root_certificates=service.root_certificates,
        ) as client:
            if self.hashes is not None:
                with _open_text(self.hashes) as lines:
                    return scan(
                        None,
                        client,
                        journal,
                        options=self.options,
                        hashed=read_hash_records(lines, self.hashes),
                        batch_size=self.batch_size,
                        clean_rows=self.clean_rows,
                        retry=retry,
                        on_commit=on_commit,
                        on_retry=on_retry,
                    )
            return scan(
                self.inputs(),
                client,
                journal,
                options=self.options,
                jobs=self.jobs or os.cpu_count() or 1,
                batch_size=self.batch_size,
                clean_rows=self.clean_rows,
                retry=retry,
                on_commit=on_commit,
                on_retry=on_retry,
            )

    def _run_dask(
        self,
        journal: Journal,
        service: Service,
        timeout: float,
        retry: RetryPolicy,
        on_commit: Callable[[int], None] | None,
    ) -> ScanSummary:
        try:
            from distributed import Client as DaskClient
        except ImportError:
            raise InvalidInput(
                "scanning on Dask needs Dask: pip install 'matcher[dask]'", field="dask"
            ) from None
        try:
            with DaskClient(self.dask, timeout=timeout) as dask_client:
                return scan_dask(
                    dask_client,
                    self.inputs(),
                    service,
                    journal,
                    options=self.options,
                    partition_size=self.partition_size,
                    batch_size=self.batch_size,
                    clean_rows=self.clean_rows,
                    retry=retry,
                    on_commit=on_commit,
                )
        except MatcherError:
            raise
        except Exception as exc:
            # The cluster's own failures (scheduler unreachable, a task that killed its
            # workers too often): one line, as for any other stop.
            raise MatcherError(f"the Dask job failed: {type(exc).__name__}: {exc}") from exc


def _read_paths(paths: tuple[str, ...]) -> Iterator[str]:
    for p in paths:
        if p == "-":
            yield from read_lines(sys.stdin)
        else:
            yield p


def _listing(name: str) -> Iterator[str]:
    with _open_text(name) as stream:
        yield from read_lines(stream)


@contextlib.contextmanager
def _open_text(name: str) -> Iterator[IO[str]]:
    if name == "-":
        yield sys.stdin
        return
    with Path(name).open(encoding="utf-8") as stream:
        yield stream


def count_in_background(count: Callable[[], int | None], found: Callable[[int], None]) -> None:
    """Call ``found(n)`` once ``count()`` returns, from a thread: a progress bar gets its total
    (and an ETA) without the file list ever being held in memory. A count is a nicety: any
    failure of it is ignored."""

    def run() -> None:
        with contextlib.suppress(Exception):
            n = count()
            if n is not None:
                found(n)

    threading.Thread(target=run, name="matcher-scan-count", daemon=True).start()


class Interrupted(Exception):
    """The work was stopped by a signal: ``signum``, and whether it ``finished`` winding down
    within the grace period (if not, its threads still hold work nothing needs any more)."""

    def __init__(self, signum: int, finished: bool) -> None:
        super().__init__(signum, finished)
        self.signum = signum
        self.finished = finished


def run_interruptibly(
    work: Callable[[], T], on_interrupt: Callable[[], None], *, grace: float = 15.0
) -> T:
    """Run ``work`` in a thread and wait for it, so that Ctrl-C (or SIGTERM) lands here, in the
    main thread, never half-way through one of the work's steps (a commit to the report).

    On a signal: call ``on_interrupt`` (e.g. ``journal.abandon``, which makes the work wind
    down), give the work ``grace`` seconds to finish (a second Ctrl-C cuts that short), then
    raise ``Interrupted``. Must be called from the main thread (signal handlers live there).
    """
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
            raise Interrupted(int(signum), not thread.is_alive()) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value
