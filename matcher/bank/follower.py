"""The index follower: the one code path that changes the in-memory index.

The index is a cache of the store. It changes in exactly one way: by reading the store's
change log from the follower's own position and applying it, under one lock, in log order.
That single path serves start-up (snapshot load, then catch-up with what was committed during
the load), this process's own writes (the bank calls ``catch_up`` after every commit, so an
acknowledged enrollment is matchable when the call returns) and, later, a replica's follow
loop (``catch_up`` on a timer or a notification). Applying a change twice is harmless (an add
replaces an entry's code, a remove of an absent entry does nothing), so a failure halfway
through a batch is retried from the same position.

Replicas (several ``matcher serve`` on one PostgreSQL store) keep their index current with
``start_following``: a loop that waits for the store's notification of a write (PostgreSQL's
LISTEN/NOTIFY, ``wait_for_changes``) or at most ``poll`` seconds, then catches up. The
notification only wakes it; the log is the truth. When the log was trimmed past the follower's
position (``Conflict``: it was down or behind for longer than the log is kept), it reloads
from a fresh snapshot, serving from the old index meanwhile (matches stay correct: every
candidate is checked against the store). ``healthy`` is what the service's readiness reports:
loaded, and the last catch-up reached the end of the log less than ``stale_after`` seconds ago.
The loop also trims the log, keeping ``keep_log`` seconds of it: it deletes up to the position
it had that long ago, so only a replica further behind than that must reload.

The log names items, never values: an "add" reads the item's codes from the store by id
(nothing if it was withdrawn since: its "remove" comes later in the log), a "remove" removes
the entry ids ``entry_ids(item_id, hash_count)`` with no read at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from matcher.errors import Conflict, MatcherError
from matcher.index import Index
from matcher.records import Change, CodeChunk, entry_ids
from matcher.signals import SIGNALS
from matcher.store.base import ChangeFeed

__all__ = ["IndexFollower", "Progress"]

log = logging.getLogger("matcher.follower")

Progress = Callable[[int, int], None]
"""A progress callback: ``(hashes done, hashes in total)``."""


class IndexFollower:
    """Keeps one ``Index`` in step with a store's change log. Safe to share between threads.

    Searches read ``index`` without any lock (the index allows searches alongside its own
    mutations); ``load`` swaps in a whole new index at once.
    """

    def __init__(self, store: ChangeFeed, *, batch: int = 10_000) -> None:
        self._store = store
        self._batch = batch
        self._index = Index()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._position = ""
        self._load_seconds: float | None = None
        self._caught_up_at: float | None = None  # monotonic time the log's end was last reached
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stale_after = 5.0
        """Seconds without reaching the log's end after which ``healthy`` turns False."""
        self.reloads = 0
        """How many times the follow loop reloaded from a snapshot (the log was trimmed)."""
        self.applied_total = 0
        """Changes applied since start (by every path)."""
        self.errors = 0
        """Failed catch-ups of the follow loop (the store unreachable, say)."""
        self.after_catch_up: list[Callable[[], object]] = []
        """Called by the follow loop after each catch-up (the bank refreshes its allowlist)."""

    @property
    def index(self) -> Index:
        """The current index (empty until loaded)."""
        return self._index

    @property
    def ready(self) -> bool:
        """True once loaded: the index holds everything up to ``position``."""
        return self._ready.is_set()

    @property
    def position(self) -> str:
        """The change-log position applied so far (opaque, the store's own)."""
        return self._position

    @property
    def load_seconds(self) -> float | None:
        """How long the last ``load`` took, or None."""
        return self._load_seconds

    @property
    def lag_seconds(self) -> float | None:
        """Seconds since a catch-up last reached the end of the change log (None before the
        first load). Stays below the poll interval while the store is reachable."""
        at = self._caught_up_at
        return None if at is None else max(0.0, time.monotonic() - at)

    @property
    def healthy(self) -> bool:
        """Loaded, and caught up with the log less than ``stale_after`` seconds ago."""
        lag = self.lag_seconds
        return self.ready and lag is not None and lag < self.stale_after

    def start_following(self, *, poll: float = 0.25, keep_log: float | None = 3600.0) -> None:
        """Follow the store in a background thread until ``stop_following`` (see the module
        docstring). ``keep_log``: seconds of change log to keep (None: never trim)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow_loop, args=(poll, keep_log), name="matcher-follow", daemon=True
        )
        self._thread.start()

    def stop_following(self, timeout: float = 5.0) -> None:
        """Stop the follow loop (waits up to ``timeout`` s for it)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _follow_loop(self, poll: float, keep_log: float | None) -> None:
        wait = getattr(self._store, "wait_for_changes", None)
        marks: deque[tuple[float, str]] = deque()  # (monotonic time, position then)
        backoff = poll
        while not self._stop.is_set():
            try:
                if wait is not None:
                    wait(poll)
                else:
                    self._stop.wait(poll)
                if self._stop.is_set():
                    return
                if not self.ready:
                    continue
                try:
                    self.catch_up()
                except Conflict:
                    log.warning("the change log was trimmed past this replica: reloading")
                    self.reloads += 1
                    self.load()
                for hook in self.after_catch_up:
                    hook()
                if keep_log is not None:
                    self._trim(marks, keep_log)
                backoff = poll
            except MatcherError as exc:
                self.errors += 1
                log.warning("following the store failed (%s); retrying", type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                self.errors += 1
                log.exception("following the store failed; retrying")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _trim(self, marks: deque[tuple[float, str]], keep: float) -> None:
        now = time.monotonic()
        if not marks or now - marks[-1][0] >= min(keep / 10, 60.0):
            marks.append((now, self._position))
        old = None
        while marks and now - marks[0][0] >= keep:
            old = marks.popleft()[1]
        if old:
            self._store.trim_changes(old)

    def load(self, progress: Progress | None = None) -> float:
        """Build a fresh index from a store snapshot, catch up, swap it in; return seconds.

        Reads every stored hash from one consistent snapshot in big blocks (no per-hash
        objects) into preallocated arrays, adds each signal type in one bulk build, then, under
        the lock, applies the changes committed since the snapshot and swaps the index in.
        Writes go on meanwhile; their own ``catch_up`` calls wait for the swap or leave the
        work to it.
        """
        started = time.perf_counter()
        with self._store.snapshot() as snap:
            # Exact per-signal counts let each signal's ids and codes land in one preallocated
            # array: no per-hash objects, no concatenation copy.
            arrays = {
                name: (np.empty(n, np.int64), np.empty((n, SIGNALS[name].byte_length), np.uint8))
                for name, n in snap.counts.items()
            }
            filled = dict.fromkeys(arrays, 0)
            spill: dict[str, list[CodeChunk]] = {}  # only if the counts were ever wrong
            done, total = 0, snap.total
            if progress is not None:
                progress(0, total)
            for chunk in snap.chunks():
                ids, codes = arrays[chunk.signal]
                at, n = filled[chunk.signal], len(chunk.ids)
                if at + n <= len(ids):
                    ids[at : at + n] = chunk.ids
                    codes[at : at + n] = chunk.codes
                    filled[chunk.signal] = at + n
                else:
                    spill.setdefault(chunk.signal, []).append(chunk)
                done += n
                if progress is not None:
                    progress(done, max(total, done))
            position = snap.position
        index = Index()
        for name in list(arrays):
            ids, codes = arrays.pop(name)
            ids, codes = ids[: filled[name]], codes[: filled[name]]
            if name in spill:
                ids = np.concatenate([ids, *(c.ids for c in spill[name])])
                codes = np.concatenate([codes, *(c.codes for c in spill[name])])
            index.add_codes(SIGNALS[name], ids, codes)
            del ids, codes  # free this signal's arrays before the next one is added
        with self._lock:
            applied, position = self._follow(index, position)
            self._index = index
            self._position = position
            self._load_seconds = time.perf_counter() - started
            self._caught_up_at = time.monotonic()
            self.applied_total += applied
            self._ready.set()
        return self._load_seconds

    def catch_up(self) -> int:
        """Apply every change committed since ``position``; return how many were applied.

        Before the first ``load`` this does nothing (returns 0): the load's own catch-up will
        apply those changes.
        """
        with self._lock:
            if not self._ready.is_set():
                return 0
            applied, self._position = self._follow(self._index, self._position)
            self._caught_up_at = time.monotonic()
            self.applied_total += applied
            return applied

    def _follow(self, index: Index, position: str) -> tuple[int, str]:
        applied = 0
        while True:
            batch = self._store.changes_since(position, limit=self._batch)
            if batch.changes:
                self._apply(index, batch.changes)
                applied += len(batch.changes)
            position = batch.position  # only once the batch is in the index
            if not batch.more:
                return applied, position

    def _apply(self, index: Index, changes: list[Change]) -> None:
        removed = {c.item_id: c.hash_count for c in changes if c.op == "remove"}
        added = [c.item_id for c in changes if c.op == "add" and c.item_id not in removed]
        if removed:
            index.remove(np.concatenate([entry_ids(i, n) for i, n in removed.items()]))
        if added:
            for chunk in self._store.item_codes(added):
                index.add_codes(SIGNALS[chunk.signal], chunk.ids, chunk.codes)
