"""Exact Hamming range search over stored hashes, per signal type. No I/O.

Contract (what the bank codes against):

- Entries are identified by ``int64`` ids chosen by the caller (the store's row ids). Codes are
  ``uint8`` arrays of shape ``(n, signal.byte_length)``: the hash bytes, big-endian as in
  ``Hash.value``. Several entries may share a code; an id is present at most once (adding an id
  that is present replaces its code).
- ``search(codes, max_distance)`` returns, for each query code, EVERY live entry within
  ``max_distance`` bits, as ``(ids int64, distances int32)`` sorted by distance then id. The
  distance may be anything up to the signal's maximum, never more (``InvalidDistance``).
- ``remove`` takes effect for the very next search.

This first version is a flat scan; the multi-index version keeps the same interface.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from matcher.errors import InvalidHash
from matcher.signals import SIGNALS, Hash, SignalType

__all__ = ["ExactIndex", "HammingIndex", "Index"]

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)

Result = tuple[np.ndarray, np.ndarray]


def _check_ids(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(np.unique(arr)) != len(arr):
        raise ValueError("ids in one add must be distinct")
    return arr


def _check_codes(signal: SignalType, codes: np.ndarray, n: int | None = None) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != signal.byte_length:
        raise InvalidHash(
            f"{signal.name} codes must be a uint8 array of shape (n, {signal.byte_length})"
        )
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"got {n} ids but {arr.shape[0]} codes")
    return np.ascontiguousarray(arr)


def _empty_result() -> Result:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)


class HammingIndex:
    """Exact range search over the codes of one perceptual signal type (PDQ, pHash).

    Thread safety: mutations (``add``, ``remove``, ``compact``) hold a lock; ``search`` takes
    none and reads one consistent snapshot of the entries.
    """

    def __init__(self, signal: SignalType, *, flat_below: int = 50_000) -> None:
        if signal.exact:
            raise ValueError(f"{signal.name} is an exact signal: use ExactIndex")
        self.signal = signal
        # Segments smaller than this are scanned flat (unused in the flat version).
        self.flat_below = flat_below
        self._lock = threading.Lock()
        self._ids = np.empty(0, dtype=np.int64)
        self._codes = np.empty((0, signal.byte_length), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: np.ndarray | Sequence[int], codes: np.ndarray) -> None:
        """Add entries; an id already present has its code replaced."""
        ids_arr = _check_ids(ids)
        codes_arr = _check_codes(self.signal, codes, len(ids_arr))
        with self._lock:
            keep = ~np.isin(self._ids, ids_arr)
            new_ids = np.concatenate([self._ids[keep], ids_arr])
            new_codes = np.concatenate([self._codes[keep], codes_arr])
            self._ids, self._codes = new_ids, new_codes

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries by id (unknown ids are ignored); return how many were removed."""
        ids_arr = np.fromiter((int(i) for i in ids), dtype=np.int64)
        with self._lock:
            keep = ~np.isin(self._ids, ids_arr)
            removed = int(len(keep) - keep.sum())
            self._ids, self._codes = self._ids[keep], self._codes[keep]
        return removed

    def compact(self) -> None:
        """Drop removed entries for good (a no-op in the flat version)."""

    def search(self, codes: np.ndarray, max_distance: int | None = None) -> list[Result]:
        """Return every entry within ``max_distance`` of each query code (see module doc)."""
        distance = self.signal.check_distance(max_distance, field="max_distance")
        queries = _check_codes(self.signal, codes)
        ids, stored = self._ids, self._codes
        out: list[Result] = []
        for q in queries:
            d = _POPCOUNT8[np.bitwise_xor(stored, q)].sum(axis=1)
            hit = np.flatnonzero(d <= distance)
            order = np.lexsort((ids[hit], d[hit]))
            out.append((ids[hit][order], d[hit][order].astype(np.int32)))
        return out


class ExactIndex:
    """Exact-match lookup for cryptographic digests (MD5, SHA-256): a plain mapping."""

    def __init__(self, signal: SignalType) -> None:
        if not signal.exact:
            raise ValueError(f"{signal.name} is not an exact signal: use HammingIndex")
        self.signal = signal
        self._lock = threading.Lock()
        self._by_code: dict[bytes, set[int]] = {}
        self._by_id: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, ids: np.ndarray | Sequence[int], codes: np.ndarray) -> None:
        """Add entries; an id already present has its code replaced."""
        ids_arr = _check_ids(ids)
        codes_arr = _check_codes(self.signal, codes, len(ids_arr))
        with self._lock:
            self._remove_locked(ids_arr.tolist())
            for i, code in zip(ids_arr.tolist(), codes_arr, strict=True):
                key = code.tobytes()
                self._by_id[i] = key
                self._by_code.setdefault(key, set()).add(i)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries by id (unknown ids are ignored); return how many were removed."""
        with self._lock:
            return self._remove_locked([int(i) for i in ids])

    def _remove_locked(self, ids: list[int]) -> int:
        removed = 0
        for i in ids:
            key = self._by_id.pop(i, None)
            if key is None:
                continue
            removed += 1
            holders = self._by_code[key]
            holders.discard(i)
            if not holders:
                del self._by_code[key]
        return removed

    def compact(self) -> None:
        """Nothing to compact: removal from a mapping is immediate."""

    def search(self, codes: np.ndarray, max_distance: int | None = None) -> list[Result]:
        """Return the ids stored under each query code (distance 0)."""
        self.signal.check_distance(max_distance, field="max_distance")
        queries = _check_codes(self.signal, codes)
        out: list[Result] = []
        for q in queries:
            holders = self._by_code.get(q.tobytes())
            if not holders:
                out.append(_empty_result())
                continue
            found = np.array(sorted(holders), dtype=np.int64)
            out.append((found, np.zeros(len(found), dtype=np.int32)))
        return out


class Index:
    """One index per signal type: what the bank holds in memory.

    Ids must be unique across signal types (they are the store's row ids), so ``remove`` needs
    no signal type.
    """

    def __init__(self, signals: Iterable[SignalType] | None = None) -> None:
        chosen = list(SIGNALS.values()) if signals is None else list(signals)
        self._indexes: dict[str, HammingIndex | ExactIndex] = {
            s.name: ExactIndex(s) if s.exact else HammingIndex(s) for s in chosen
        }

    def _get(self, signal: SignalType) -> HammingIndex | ExactIndex:
        try:
            return self._indexes[signal.name]
        except KeyError:
            raise InvalidHash(f"signal type {signal.name!r} is not indexed") from None

    def add(self, ids: np.ndarray | Sequence[int], hashes: Sequence[Hash]) -> None:
        """Add ``hashes`` (any mix of signal types) under ``ids`` (same length)."""
        ids_arr = _check_ids(ids)
        if len(ids_arr) != len(hashes):
            raise ValueError(f"got {len(ids_arr)} ids but {len(hashes)} hashes")
        by_signal: dict[str, list[int]] = {}
        for pos, h in enumerate(hashes):
            by_signal.setdefault(h.signal.name, []).append(pos)
        for name, positions in by_signal.items():
            signal = SIGNALS[name]
            codes = np.frombuffer(
                b"".join(hashes[p].value for p in positions), dtype=np.uint8
            ).reshape(len(positions), signal.byte_length)
            self.add_codes(signal, ids_arr[positions], codes)

    def add_codes(
        self, signal: SignalType, ids: np.ndarray | Sequence[int], codes: np.ndarray
    ) -> None:
        """Add codes of one signal type (the fast path for bulk loading)."""
        self._get(signal).add(ids, codes)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries by id from every signal type; return how many were removed."""
        ids_list = [int(i) for i in ids]
        return sum(index.remove(ids_list) for index in self._indexes.values())

    def compact(self) -> None:
        """Compact every signal type's index (drop removed entries for good)."""
        for index in self._indexes.values():
            index.compact()

    def search(
        self, signal: SignalType, codes: np.ndarray, max_distance: int | None = None
    ) -> list[Result]:
        """Search one signal type; ``max_distance`` None means the signal's default."""
        return self._get(signal).search(codes, max_distance)

    def size(self, signal: SignalType) -> int:
        """Number of live entries of one signal type."""
        return len(self._get(signal))

    def __len__(self) -> int:
        return sum(len(index) for index in self._indexes.values())
