"""A scan on one machine: stream the file list, hash in a process pool, match in batches.

::

    inputs -> skip files already done (state) -> hash (N processes, ordered, bounded window)
           -> batches of queries -> StreamMatch (bounded in flight, retried) -> report + state

Every stage pulls from the one before it through a bounded window, so memory stays flat on a
job of any length. Files with nothing to ask (a failure, or no usable hash) are committed as
they come; the others once their batch is answered.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from matcher.client import Client
from matcher.hashing import FileHashes, ordered_map
from matcher.records import Query, QueryResult
from matcher.scan.journal import Entry, Journal
from matcher.scan.sources import HashOptions, hash_item, query_of
from matcher.scan.stream import RetryPolicy, match_batches

__all__ = ["ScanSummary", "entry_of", "scan", "skip_done"]

_CHUNK = 256  # paths looked up in the state at a time
_count_lock = threading.Lock()


@dataclass(slots=True)
class ScanSummary:
    """What a run did (``scanned``...) and where the whole job stands (``total_*``)."""

    scanned: int = 0
    """Files scanned by this run (a resumed run does not count the files done before it)."""
    matched: int = 0
    failed: int = 0
    skipped: int = 0
    """Files found already done in the state (scanned by an earlier run)."""
    seconds: float = 0.0
    retries: int = 0
    total_scanned: int = 0
    total_matched: int = 0
    total_failed: int = 0

    @property
    def images_per_second(self) -> float:
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "matched": self.matched,
            "failed": self.failed,
            "skipped_already_done": self.skipped,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "retries": self.retries,
            "total_scanned": self.total_scanned,
            "total_matched": self.total_matched,
            "total_failed": self.total_failed,
        }

    def add(self, entries: Iterable[Entry]) -> None:
        # Called from the producer thread (files with nothing to ask) and the reader's.
        with _count_lock:
            for e in entries:
                self.scanned += 1
                self.matched += e.matched
                self.failed += e.failed

    def finish(self, journal: Journal, started: float) -> ScanSummary:
        self.seconds = time.perf_counter() - started
        totals = journal.totals
        self.total_scanned, self.total_matched = totals.scanned, totals.matched
        self.total_failed = totals.failed
        return self


def entry_of(result: FileHashes, found: QueryResult | None, *, clean_rows: bool) -> Entry:
    """A file's report rows: one per matched item (its opaque ``item_id``, the closest
    distance and its signal, and how many of the file's hashes hit it); one with the error for
    a failure; and, with ``clean_rows``, one with an empty ``item_id`` for a file that matched
    nothing."""
    if not result.ok:
        row = {"path": result.path, "error": result.error, "error_kind": result.error_kind}
        return Entry(result.path, [row], failed=True)
    matches = found.matches if found is not None else []
    rows = [
        {
            "path": result.path,
            "item_id": m.item_id,
            "signal": m.signal.name,
            "distance": m.distance,
            "hits": m.hits,
        }
        for m in matches
    ]
    if not rows and clean_rows:
        rows = [{"path": result.path, "item_id": None}]
    return Entry(result.path, rows, matched=bool(matches))


def skip_done(
    items: Iterable[str], journal: Journal, on_skip: Callable[[int], None] | None = None
) -> Iterator[str]:
    """The items not yet in the report, asking the state a chunk at a time."""
    it = iter(items)
    while chunk := list(itertools.islice(it, _CHUNK)):
        pending = journal.pending(chunk)
        if on_skip is not None and len(pending) < len(chunk):
            on_skip(len(chunk) - len(pending))
        yield from pending


@dataclass(slots=True)
class _Batch:
    files: list[tuple[FileHashes, Query]] = field(default_factory=list)


def _batches(
    results: Iterable[FileHashes],
    options: HashOptions,
    journal: Journal,
    summary: ScanSummary,
    *,
    batch_size: int,
    linger: float,
    clean_rows: bool,
    on_commit: Callable[[int], None] | None,
) -> Iterator[_Batch]:
    """Group hashed files into batches of queries; commit files with nothing to ask at once."""
    batch, local = _Batch(), list[Entry]()
    opened = time.monotonic()

    def commit_local() -> None:
        fresh = journal.commit(local)
        summary.add(fresh)
        if on_commit is not None:
            on_commit(len(fresh))
        local.clear()

    for result in results:
        query = query_of(result, options)
        if query is None:
            local.append(entry_of(result, None, clean_rows=clean_rows))
            if len(local) >= batch_size:
                commit_local()
        else:
            if not batch.files:
                opened = time.monotonic()
            batch.files.append((result, query))
        # A batch also leaves after ``linger`` seconds, so that a slow source (remote files)
        # still gets its answers, and its commits, as it goes.
        if len(batch.files) >= batch_size or (batch.files and time.monotonic() - opened >= linger):
            if local:
                commit_local()
            yield batch
            batch = _Batch()
    if local:
        commit_local()
    if batch.files:
        yield batch


def scan(
    items: Iterable[str] | None,
    client: Client,
    journal: Journal,
    *,
    options: HashOptions | None = None,
    hashed: Iterable[FileHashes] | None = None,
    jobs: int = 1,
    batch_size: int = 256,
    in_flight: int = 4,
    linger: float = 1.0,
    clean_rows: bool = False,
    retry: RetryPolicy | None = None,
    on_commit: Callable[[int], None] | None = None,
    on_skip: Callable[[int], None] | None = None,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> ScanSummary:
    """Scan files on this machine against the service; write the report through ``journal``.

    ``items`` are local paths or URLs of files (expand folders with ``iter_inputs`` first);
    or give ``hashed`` instead: files already hashed (``read_hash_records``). Files already in
    the report are skipped, so calling this again with the same journal resumes the job.
    ``on_commit(n)`` is called as files reach the report (for a progress bar).

    For example, against a running service::

        from matcher.client import Client
        from matcher.scan import Journal, iter_inputs, scan

        with Client("127.0.0.1:50051", "mk_...") as client, Journal("report.jsonl") as j:
            summary = scan(iter_inputs(["/data/photos"]), client, j, jobs=4)
    """
    options = options or HashOptions()
    summary = ScanSummary()
    started = time.perf_counter()

    def skipped(n: int) -> None:
        summary.skipped += n

    if hashed is not None:
        results: Iterable[FileHashes] = _skip_done_hashed(hashed, journal, skipped)
    else:
        if items is None:
            raise ValueError("give items (paths or URLs) or hashed records")
        todo = skip_done(items, journal, skipped)
        # Hashing runs in other processes even with one job: PDQ holds the GIL, and this
        # process's threads (the stream, the report) would otherwise wait for it. The
        # workers are fresh interpreters (matcher.hashing.pool): never a fork of this process,
        # whose gRPC threads are already running, and never a re-import of the caller's
        # script; they exit when this process dies, even by SIGKILL.
        results = ordered_map(
            functools.partial(hash_item, options=options),
            todo,
            jobs=jobs,
            window=max(2, jobs) * 8,
            inline=False,
        )
    batches = _batches(
        results,
        options,
        journal,
        summary,
        batch_size=batch_size,
        linger=linger,
        clean_rows=clean_rows,
        on_commit=on_commit,
    )

    def count_retry(exc: Exception, wait: float) -> None:
        summary.retries += 1
        if on_retry is not None:
            on_retry(exc, wait)

    answers = match_batches(
        client,
        batches,
        lambda b: [q for _, q in b.files],
        in_flight=in_flight,
        retry=retry,
        on_retry=count_retry,
    )
    for batch, found in answers:
        entries = [
            entry_of(result, answer, clean_rows=clean_rows)
            for (result, _), answer in zip(batch.files, found, strict=True)
        ]
        fresh = journal.commit(entries)
        summary.add(fresh)
        if on_commit is not None:
            on_commit(len(fresh))
    return summary.finish(journal, started)


def _skip_done_hashed(
    hashed: Iterable[FileHashes], journal: Journal, on_skip: Callable[[int], None]
) -> Iterator[FileHashes]:
    it = iter(hashed)
    while chunk := list(itertools.islice(it, _CHUNK)):
        pending = set(journal.pending([r.path for r in chunk]))
        if len(pending) < len(chunk):
            on_skip(len(chunk) - len(pending))
        yield from (r for r in chunk if r.path in pending)
