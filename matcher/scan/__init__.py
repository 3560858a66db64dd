"""Batch scanning: hash a back catalogue where it lives, ask the service, write a report.

One machine (``scan``) or a Dask cluster (``scan_dask``); both stream the file list, keep
memory flat, retry a broken stream without losing or repeating a batch, and write through a
``Journal``: the report plus a state file, so that a job stopped at any moment (Ctrl-C, a
crash, SIGKILL) continues where it stopped, with every file in the report exactly once.

``ScanJob`` holds a whole job (its inputs, options, and where it runs) for the ``matcher scan``
command and for scripts alike; ``scan`` and ``scan_dask`` are the two engines under it. Hashing
runs in worker processes of our own (``matcher.hashing.pool``): a script needs no
``if __name__ == "__main__":`` guard, and a killed scan leaves no process behind.

For example, against a running service (the README runs the same as a script)::

    from matcher.client import Client
    from matcher.scan import Journal, iter_inputs, scan

    with Client("127.0.0.1:50051", "mk_...") as client, Journal("report.jsonl") as journal:
        summary = scan(iter_inputs(["/data/photos"]), client, journal, jobs=4)
    print(summary.scanned, summary.matched, summary.failed)  # e.g. 120000 3 12
"""

from matcher.scan.cluster import Service, scan_dask, scan_partition
from matcher.scan.job import Interrupted, ScanJob, count_in_background, run_interruptibly
from matcher.scan.journal import COLUMNS, Entry, Journal, Totals
from matcher.scan.local import ScanSummary, entry_of, scan, skip_done
from matcher.scan.sources import (
    HashOptions,
    hash_item,
    is_url,
    iter_inputs,
    query_of,
    read_hash_records,
    read_lines,
)
from matcher.scan.stream import RetryPolicy, match_batches

__all__ = [
    "COLUMNS",
    "Entry",
    "HashOptions",
    "Interrupted",
    "Journal",
    "RetryPolicy",
    "ScanJob",
    "ScanSummary",
    "Service",
    "Totals",
    "count_in_background",
    "entry_of",
    "hash_item",
    "is_url",
    "iter_inputs",
    "match_batches",
    "query_of",
    "read_hash_records",
    "read_lines",
    "run_interruptibly",
    "scan",
    "scan_dask",
    "scan_partition",
    "skip_done",
]
