"""A scan spread over a Dask cluster: workers hash and match, the driver writes the report.

::

    driver: inputs -> skip files done (state) -> partitions of N paths -> submit (bounded)
    worker: hash its partition -> StreamMatch (retried) -> the partition's report rows
    driver: as each partition completes -> Journal.commit (report + state, atomically)

Fault tolerance comes from keeping the driver the only writer, and a partition the unit of
work. A task is a pure function of its paths: when a worker dies, Dask runs its tasks again
elsewhere, and the driver sees one result per partition. ``Journal.commit`` also refuses any
file already in the report, so even a result delivered twice could not duplicate a row. If the
driver itself dies, the state holds every committed partition: the same command resumes.

Only paths go to the workers and only match rows (opaque ids, distances) come back: hashes
never travel through the cluster, only from each worker to the service. Dask is an optional
extra (``pip install matcher[dask]``); this module imports it only when called.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from matcher.client import Client
from matcher.errors import InvalidInput
from matcher.scan.journal import Entry, Journal
from matcher.scan.local import ScanSummary, entry_of, skip_done
from matcher.scan.sources import HashOptions, hash_item, query_of
from matcher.scan.stream import RetryPolicy, match_batches

__all__ = ["Service", "scan_dask", "scan_partition"]


@dataclass(frozen=True, slots=True)
class Service:
    """How a worker reaches the matcher service (shipped to workers with each task).

    ``api_key`` None makes each worker read ``MATCHER_API_KEY`` from its own environment, so
    the key need not travel through the scheduler.
    """

    target: str
    api_key: str | None = field(default=None, repr=False)
    root_certificates: bytes | None = field(default=None, repr=False)


_clients: dict[Service, Client] = {}
_clients_lock = threading.Lock()


def _client(service: Service) -> Client:
    # One channel per worker process, reused by every task it runs (a channel per task would
    # pay a TCP and TLS handshake each time).
    with _clients_lock:
        client = _clients.get(service)
        if client is None:
            key = service.api_key or os.environ.get("MATCHER_API_KEY")
            client = Client(service.target, key, root_certificates=service.root_certificates)
            _clients[service] = client
        return client


@dataclass(frozen=True, slots=True)
class _Task:
    service: Service
    options: HashOptions
    batch_size: int
    clean_rows: bool
    retry: RetryPolicy


def scan_partition(paths: list[str], task: _Task) -> list[Entry]:
    """Hash and match one partition (runs on a worker); returns its report entries, in order."""
    results = (hash_item(p, task.options) for p in paths)
    entries: dict[int, Entry] = {}

    def batches() -> Iterable[list[tuple[int, Any]]]:
        batch: list[tuple[int, Any]] = []
        for i, result in enumerate(results):
            query = query_of(result, task.options)
            if query is None:
                entries[i] = entry_of(result, None, clean_rows=task.clean_rows)
                continue
            batch.append((i, (result, query)))
            if len(batch) >= task.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    client = _client(task.service)
    answers = match_batches(client, batches(), lambda b: [q for _, (_, q) in b], retry=task.retry)
    for batch, found in answers:
        for (i, (result, _)), answer in zip(batch, found, strict=True):
            entries[i] = entry_of(result, answer, clean_rows=task.clean_rows)
    return [entries[i] for i in sorted(entries)]


def scan_dask(
    dask_client: Any,
    items: Iterable[str],
    service: Service,
    journal: Journal,
    *,
    options: HashOptions | None = None,
    partition_size: int = 500,
    batch_size: int = 256,
    clean_rows: bool = False,
    max_pending: int | None = None,
    task_retries: int = 3,
    retry: RetryPolicy | None = None,
    on_commit: Callable[[int], None] | None = None,
    on_skip: Callable[[int], None] | None = None,
) -> ScanSummary:
    """Scan ``items`` (paths or URLs every worker can read) on the cluster of ``dask_client``.

    The file list streams from ``items`` in partitions of ``partition_size``; at most
    ``max_pending`` partitions (default: two per worker thread) are submitted at a time, so
    neither the driver nor the scheduler holds the whole list. A task that raises is retried
    ``task_retries`` times by Dask; then the scan stops with its error, and the state lets the
    same call resume. Returns the summary of this run.

    For example, against a running service and Dask scheduler::

        from dask.distributed import Client as DaskClient
        from matcher.scan import Journal, Service, iter_inputs, scan_dask

        with DaskClient("tcp://scheduler:8786") as dc, Journal("report.jsonl") as journal:
            scan_dask(dc, iter_inputs(["s3://bucket/photos/"]),
                      Service("matcher.internal:50051"), journal)
    """
    try:
        from distributed import as_completed
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidInput(
            "Dask is not installed: pip install 'matcher[dask]'", field="dask"
        ) from None
    if partition_size < 1:
        raise InvalidInput("partition_size must be at least 1", field="partition_size")
    task = _Task(service, options or HashOptions(), batch_size, clean_rows, retry or RetryPolicy())
    summary = ScanSummary()
    started = time.perf_counter()

    def skipped(n: int) -> None:
        summary.skipped += n

    todo = iter(skip_done(items, journal, skipped))
    partitions = iter(lambda: list(itertools.islice(todo, partition_size)), [])
    if max_pending is None:
        max_pending = max(2, 2 * sum(dask_client.nthreads().values()))
    run = uuid.uuid4().hex[:12]
    counter = itertools.count()
    pending = as_completed()

    def submit_next() -> bool:
        part = next(partitions, None)
        if part is None:
            return False
        future = dask_client.submit(
            scan_partition,
            part,
            task,
            key=f"matcher-scan-{run}-{next(counter)}",
            retries=task_retries,
            pure=False,
        )
        pending.add(future)
        return True

    for _ in range(max_pending):
        if not submit_next():
            break
    try:
        for future in pending:
            entries = future.result()  # a task that failed for good raises here
            fresh = journal.commit(entries)
            summary.add(fresh)
            if on_commit is not None:
                on_commit(len(fresh))
            future.release()
            submit_next()
    except BaseException:
        for future in list(pending.futures):
            future.cancel()
        raise
    return summary.finish(journal, started)
