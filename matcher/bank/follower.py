"""The index follower: the one code path that changes the in-memory index.

The index is a cache of the store. It changes in exactly one way: by reading the store's
change log from the follower's own position and applying it, under one lock, in log order.
That single path serves start-up (snapshot load, then catch-up with what was committed during
the load), this process's own writes (the bank calls ``catch_up`` after every commit, so an
acknowledged enrollment is matchable when the call returns) and, later, a replica's follow
loop (``catch_up`` on a timer or a notification). Applying a change twice is harmless (an add
replaces an entry's code, a remove of an absent entry does nothing), so a failure halfway
through a batch is retried from the same position.

The log names items, never values: an "add" reads the item's codes from the store by id
(nothing if it was withdrawn since: its "remove" comes later in the log), a "remove" removes
the entry ids ``entry_ids(item_id, hash_count)`` with no read at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from matcher.index import Index
from matcher.records import Change, CodeChunk, entry_ids
from matcher.signals import SIGNALS
from matcher.store.base import ChangeFeed

__all__ = ["IndexFollower", "Progress"]

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
            _, position = self._follow(index, position)
            self._index = index
            self._position = position
            self._load_seconds = time.perf_counter() - started
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
