"""The allowlist (negative bank) in memory: pictures no item may look like.

Hashes of benign, widely shared pictures (a meme, a celebrity photo) and of patterns that
collide across unrelated files (flat colours, gradients, grids, checkerboards, stripes: the
seed, ``matcher.allowlist_seed``) are kept by the store (``AllowlistStore``) and held here, on
every replica, in an ``Index`` of their own. The bank asks it two things:

- **Enrollment**: an item any of whose hashes is within ``RADIUS`` of an entry is refused
  (``Allowlisted``), and the whole call with it. The refusal says in plain words why, and
  nothing about which entry it resembled or how closely: a poisoner learns only "no".
- **Matching**: a query hash that hit a bank item and is also within ``RADIUS`` of an entry
  contributes no hit (``suppressed`` counts them). Only hashes that hit something are asked,
  so an upload that matches nothing (the usual case) costs nothing more.

The radius is the bank's own match threshold per signal type (PDQ 31, pHash 8, digests exact):
an item is refused exactly when its hashes would match the allowlisted picture, and a match is
suppressed exactly when the upload would also match it. A tighter radius for refusals would
let in items whose matches are then suppressed anyway. Measured on the 4,081 photos of
``../shared/data`` (``python -m bench.allowlist_photos``): none is refused; their hashes are 48
bits or more (PDQ) and 14 bits or more (pHash) from every seed entry (README, "The allowlist").

Freshness: the store bumps a version with every change. ``refresh`` reads it (one small query)
and reloads everything when it moved; the bank calls it before every enrollment check, and the
replica's follow loop after every wake-up, so an admin's addition applies at once everywhere.
The allowlist is small (hundreds to some thousands of entries): a reload is a full read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from matcher.index import Index
from matcher.signals import SIGNALS, Hash, SignalType
from matcher.store.base import AllowlistStore

__all__ = ["RADIUS", "REFUSAL", "Allowlist"]

RADIUS: dict[str, int] = {name: s.default_distance for name, s in SIGNALS.items()}
"""The allowlist radius per signal type, in bits: each signal's default match distance."""

REFUSAL = (
    "this picture looks like a widely shared or featureless image (a meme, a plain colour, a "
    "gradient, a grid or a pattern), which would match many unrelated pictures: it cannot be "
    "enrolled. Enroll the original photo, uncropped, or contact the operator"
)
"""The refusal's plain-language reason (the same for every entry)."""


class Allowlist:
    """The store's allowlist in memory, reloaded when its version moves. Thread-safe:
    searches read the current index without a lock; a reload swaps in a new one."""

    def __init__(self, store: AllowlistStore) -> None:
        self._store = store
        self._index = Index()
        self._signals: frozenset[str] = frozenset()
        self._version = -1
        self._size = 0
        self._lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.suppressed = 0
        """Query hashes whose hits were suppressed since start (this replica)."""
        self.refused = 0
        """Enrollment calls refused since start (this replica)."""
        self.reloads = 0
        """How many times the allowlist was read from the store."""

    @property
    def version(self) -> int:
        """The store version held (-1 before the first load)."""
        return self._version

    def __len__(self) -> int:
        return self._size

    def refresh(self) -> bool:
        """Reload when the store's version moved since the last load; True if it reloaded."""
        if self._store.allowlist_version() == self._version:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Read every entry from the store and swap in a fresh index."""
        with self._lock:
            codes = self._store.allowlist_codes()
            if codes.version == self._version:
                return False
            index = Index()
            size = 0
            for chunk in codes.chunks:
                index.add_codes(SIGNALS[chunk.signal], chunk.ids, chunk.codes)
                size += len(chunk.ids)
            self._index, self._size = index, size
            self._signals = frozenset(c.signal for c in codes.chunks if len(c.ids))
            self._version = codes.version
            self.reloads += 1
            return True

    def holds(self, signal: SignalType) -> bool:
        """True when some entry is of this signal type (else nothing of it can be near one)."""
        return signal.name in self._signals

    def near(self, signal: SignalType, codes: np.ndarray) -> np.ndarray:
        """For each code (uint8 rows of ``signal``), whether an entry is within ``RADIUS``."""
        out = np.zeros(len(codes), bool)
        if not len(codes) or signal.name not in self._signals:
            return out
        results = self._index.search(signal, codes, RADIUS[signal.name])
        for k, (ids, _) in enumerate(results):
            out[k] = len(ids) > 0
        return out

    def first_near(self, hashes: Sequence[Hash]) -> int | None:
        """The position of the first hash within ``RADIUS`` of an entry, or None."""
        by_signal: dict[SignalType, list[int]] = {}
        for k, h in enumerate(hashes):
            if h.signal.name in self._signals:
                by_signal.setdefault(h.signal, []).append(k)
        found: list[int] = []
        for signal, where in by_signal.items():
            codes = np.frombuffer(b"".join(hashes[k].value for k in where), np.uint8).reshape(
                len(where), signal.byte_length
            )
            near = self.near(signal, codes)
            if near.any():
                found.append(where[int(np.argmax(near))])
        return min(found) if found else None

    def count_suppressed(self, n: int) -> None:
        with self._counts_lock:
            self.suppressed += n

    def count_refused(self) -> None:
        with self._counts_lock:
            self.refused += 1
