"""The report of a scan, and the state file that makes it resumable.

The report is the product: one row per match (and per failed file, and with ``clean_rows`` per
file that matched nothing). The state file (SQLite, beside the report) records which files are
in the report and how many bytes of the report are committed.

Exactly once, across crashes. Each commit, for a group of files:

1. appends the group's rows to the report, then flushes and fsyncs it;
2. in one SQLite transaction (``synchronous=FULL``), marks the group's files done and records
   the report's new length.

A crash before step 2 commits leaves rows past the recorded length, for files not marked done:
the next run truncates the report back to the recorded length and scans those files again. A
crash after it loses nothing. So every file's rows are in the report exactly once, and no file
is skipped. Files are keyed by a 128-bit BLAKE2b digest of their path, so the state of a
ten-million-file job is a few hundred megabytes on disk and nothing in memory: the scan asks
the state about each chunk of paths as it streams past.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from matcher.errors import Conflict

__all__ = ["COLUMNS", "Entry", "Journal", "JournalClosed", "Totals"]

COLUMNS = ["path", "item_id", "signal", "distance", "hits", "error", "error_kind"]
"""The report's columns (CSV header; JSON Lines rows carry the ones that apply)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS done (key BLOB PRIMARY KEY) WITHOUT ROWID;
"""
_VERSION = "2"  # 2: one row per matched item (item_id, hits), issue 9
_LOOKUP_CHUNK = 500  # under SQLite's default limit of bound parameters


def path_key(path: str) -> bytes:
    """The state's key for a path: 16 bytes, collision odds negligible at billions of files."""
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=16).digest()


class JournalClosed(RuntimeError):
    """The journal was abandoned (the scan is stopping): nothing more is written."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One scanned file's outcome: its report rows and whether it matched or failed."""

    path: str
    rows: list[dict[str, Any]]
    matched: bool = False
    failed: bool = False


@dataclass(slots=True)
class Totals:
    """Counts over the whole job, across resumed runs."""

    scanned: int = 0
    matched: int = 0
    failed: int = 0
    rows: int = 0


class Journal:
    """Writes report rows and keeps the state that makes a job resumable. Thread-safe.

    ``report`` is a path (resumable: the state goes to ``state``, by default the report's path
    plus ``.state``) or an open text stream such as standard output (not resumable: the state
    is a temporary file, which still keeps a file from being reported twice). ``job``
    describes what the job computes (its inputs and options); the state of a different job is
    refused rather than mixed in. ``restart`` discards any previous state and report.
    """

    def __init__(
        self,
        report: str | os.PathLike[str] | IO[str],
        *,
        fmt: str = "jsonl",
        job: dict[str, Any] | None = None,
        state: str | os.PathLike[str] | None = None,
        restart: bool = False,
    ) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"report format must be jsonl or csv, got {fmt!r}")
        self.fmt = fmt
        self.totals = Totals()
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        self._file: IO[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._abandoned = False
        job_text = json.dumps(job or {}, sort_keys=True)
        if isinstance(report, (str, os.PathLike)):
            self.report_path: Path | None = Path(report)
            self.state_path = Path(state) if state else Path(f"{self.report_path}.state")
            self._db = self._open_resumable(job_text, restart)
        else:
            if state is not None:
                raise ValueError("a state file needs a report file, not a stream")
            self.report_path = None
            self._stream = report
            self._tmp = tempfile.TemporaryDirectory(prefix="matcher-scan-")
            self.state_path = Path(self._tmp.name) / "state"
            self._db = self._connect(self.state_path)
            self._init_meta(self._db, job_text)
            self._offset = 0
        if self._offset == 0 and fmt == "csv":
            self.commit([])  # the header, committed like any row

    # -- opening

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    def _init_meta(self, db: sqlite3.Connection, job: str) -> None:
        meta = {"version": _VERSION, "job": job, "format": self.fmt, "offset": "0"}
        meta["totals"] = json.dumps([0, 0, 0, 0])
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        db.execute("COMMIT")

    def _open_resumable(self, job: str, restart: bool) -> sqlite3.Connection:
        assert self.report_path is not None
        if restart:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.state_path}{suffix}").unlink(missing_ok=True)
            self.report_path.unlink(missing_ok=True)
        fresh = not self.state_path.exists()
        size = self.report_path.stat().st_size if self.report_path.exists() else 0
        if fresh and size:
            raise Conflict(
                f"{self.report_path} exists but has no scan state ({self.state_path}); "
                "use --restart to overwrite it, or write the report elsewhere"
            )
        db = self._connect(self.state_path)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            self._init_meta(db, job)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        elif meta.get("version") != _VERSION:
            db.close()
            raise Conflict(
                f"{self.state_path} was written by another version of matcher scan (its rows "
                "have other columns): use --restart to start over"
            )
        elif meta.get("job") != job or meta.get("format") != self.fmt:
            db.close()
            raise Conflict(
                f"{self.state_path} belongs to a different scan (other inputs or options); "
                "run the same command to continue it, or use --restart to start over"
            )
        self._offset = int(meta["offset"])
        if size < self._offset:
            db.close()
            raise Conflict(
                f"{self.report_path} is shorter than its scan state says (changed outside the "
                "scan?): use --restart to start over"
            )
        self.totals = Totals(*json.loads(meta["totals"]))
        # Rows written after the last commit belong to files not marked done: drop them; those
        # files are scanned again.
        self._file = open(self.report_path, "ab")  # noqa: SIM115 (closed in close())
        self._file.truncate(self._offset)
        return db

    # -- queries

    @property
    def resumable(self) -> bool:
        """True when the report is a file with a lasting state beside it."""
        return self.report_path is not None

    def _select_done(self, keys: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key FROM done WHERE key IN ({marks})"
            found.update(k for (k,) in self._db.execute(query, chunk))
        return found

    def pending(self, paths: Sequence[str]) -> list[str]:
        """The paths that are not in the report yet, in their order."""
        keys = [path_key(p) for p in paths]
        with self._lock:
            self._check_open()
            done = self._select_done(keys)
        return [p for p, k in zip(paths, keys, strict=True) if k not in done]

    # -- writing

    def _encode(self, rows: Iterable[dict[str, Any]]) -> bytes:
        buffer = io.StringIO()
        if self.fmt == "csv":
            writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
            if self._offset == 0:
                writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                buffer.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
        return buffer.getvalue().encode("utf-8", "surrogateescape")

    def _write(self, data: bytes) -> None:
        if self._stream is not None:
            self._stream.write(data.decode("utf-8", "surrogateescape"))
            self._stream.flush()
            return
        assert self._file is not None
        # Cut anything past the committed length first: bytes of a commit that failed half-way
        # (an interrupt between the write and the transaction) must not stay in front of ours.
        self._file.truncate(self._offset)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def commit(self, entries: Sequence[Entry]) -> list[Entry]:
        """Append the rows of ``entries`` and mark their files done, atomically (see the module
        docstring). Files already done (a path listed twice, a partition run twice) are
        skipped, so the report never has a file twice. Returns the entries written."""
        keys = [path_key(e.path) for e in entries]
        with self._lock:
            self._check_open()
            done = self._select_done(keys)
            fresh: list[tuple[bytes, Entry]] = []
            for key, entry in zip(keys, entries, strict=True):
                if key not in done:
                    done.add(key)
                    fresh.append((key, entry))
            data = self._encode(row for _, e in fresh for row in e.rows)
            if data:
                self._write(data)
            t = self.totals
            totals = Totals(
                t.scanned + len(fresh),
                t.matched + sum(e.matched for _, e in fresh),
                t.failed + sum(e.failed for _, e in fresh),
                t.rows + sum(len(e.rows) for _, e in fresh),
            )
            offset = self._offset + len(data)
            counts = [totals.scanned, totals.matched, totals.failed, totals.rows]
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO done VALUES (?)", [(k,) for k, _ in fresh])
                db.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [(str(offset), "offset"), (json.dumps(counts), "totals")],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # Only now, with the transaction committed, does the journal move on.
            self._offset, self.totals = offset, totals
            return [e for _, e in fresh]

    def _check_open(self) -> None:
        if self._abandoned:
            raise JournalClosed("the scan is stopping: the report takes no more rows")

    def abandon(self) -> None:
        """Stop writing, as the process stops (Ctrl-C): wait for a commit in progress, close,
        and make every later call raise ``JournalClosed`` (so the threads still working wind
        down). What is committed stays; nothing is half-written."""
        with self._lock:
            self._abandoned = True
            self._close_locked()

    def close(self) -> None:
        """Close the report and the state (a temporary state is deleted)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._db.close()  # a no-op when already closed
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
