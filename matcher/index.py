"""Exact Hamming range search over stored hashes, per signal type. No I/O.

The contract (what the bank codes against)::

    index = Index()                                   # one sub-index per signal type
    index.add_codes(PDQ, ids, codes)                  # ids int64 (n,), codes uint8 (n, 32)
    index.add(ids, hashes)                            # or Hash objects, any mix of types
    [(found_ids, distances)] = index.search(PDQ, query_codes, max_distance=31)
    index.remove(ids)                                 # effective for the very next search,
                                                      # and the hash values wiped from memory
    index.compact()                                   # drop removed entries for good (slow)
    len(index), index.size(PDQ)
    codes_of(hashes)                                  # Hash objects -> the uint8 array

- Entries are identified by ``int64`` ids chosen by the caller (the store's row ids), unique
  across signal types. Codes are ``uint8`` arrays of shape ``(n, signal.byte_length)``: the
  hash bytes as in ``Hash.value``. Several entries may share a code; an id is present at most
  once (adding an id that is present replaces its code).
- ``search`` returns, for each query code, EVERY live entry within ``max_distance`` bits, as
  ``(ids int64, distances int32)`` sorted by distance then id (rule 5 of DESIGN.md: nothing
  within the distance is ever missed). ``max_distance`` may be anything from 0 to the signal's
  maximum (PDQ 31, pHash 10), never more (``InvalidDistance``); None means the default.
- Perceptual signals (PDQ, pHash) use ``HammingIndex``: multi-index hashing, exact by the
  pigeonhole principle (see ``matcher._index_kernels``), with a flat scan for small segments.
  File digests (MD5, SHA-256) use ``ExactIndex``, a plain mapping.
- Start-up: pass the whole bank to one ``add`` (or ``add_batches``): one build, 7-12 s for
  10M PDQ codes on this 2-core machine, instead of many merges.
- Kernel compilation is an explicit step: call ``warm_up()`` before serving (the bank's
  ``load`` does), so that no request pays for it. ``Index()`` itself compiles nothing, so
  tools that never search (``matcher keys create``) never wait for numba.
- Memory: tables hold 16 bytes per code per table (a row number and a 96-bit sketch of the
  code, see ``matcher._index_kernels``): at 1M PDQ codes about 300 MB (codes 32 MB, ids 8 MB,
  tables 260 MB), at 10M about 2.5 GB (codes 320 MB, ids 80 MB, tables 2.1 GB). A merge or
  ``compact()`` holds the old and the new segment for a moment.

Thread safety: mutations hold a lock; searches hold none and can run in parallel with each
other and with mutations (see ``HammingIndex``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from matcher import _index_kernels as _k
from matcher.errors import InvalidHash
from matcher.signals import SIGNALS, Hash, SignalType

__all__ = ["ExactIndex", "HammingIndex", "Index", "codes_of", "one_thread", "warm_up"]

Result = tuple[np.ndarray, np.ndarray]


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    # np.unique hashes int64 (numpy 2.3+), 20 s for 10M: sorting is faster, and near linear
    # for ids that arrive in order, as store row ids do.
    out = np.sort(ids, kind="stable")
    if len(out) > 1:
        out = out[np.concatenate([[True], out[1:] != out[:-1]])]
    return out


def _id_array(ids: Iterable[int]) -> np.ndarray:
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False).reshape(-1)
    return np.fromiter((int(i) for i in ids), dtype=np.int64)


def _check_ids(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(_sorted_unique(arr)) != len(arr):
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


def codes_of(hashes: Sequence[Hash]) -> np.ndarray:
    """Hashes of one signal type as the ``uint8`` array ``(n, byte_length)`` the index takes."""
    if not hashes:
        raise ValueError("no hashes")
    signal = hashes[0].signal
    if any(h.signal != signal for h in hashes):
        raise ValueError("hashes of several signal types: group them by type first")
    return np.frombuffer(b"".join(h.value for h in hashes), dtype=np.uint8).reshape(
        len(hashes), signal.byte_length
    )


_warm_lock = threading.Lock()
_warm = False


def warm_up() -> None:
    """Compile every kernel now (about 10 s the first time, well under 1 s once numba has
    cached them on disk), so that no request pays for it. Runs once per process; an index used
    without it compiles each kernel on its first call instead."""
    global _warm
    with _warm_lock:
        if _warm:
            return
        rng = np.random.default_rng(0)
        for signal in SIGNALS.values():
            if signal.exact:
                continue
            for flat_below in (0, 10**9):
                index = HammingIndex(signal, flat_below=flat_below, threads=1)
                codes = rng.integers(0, 256, (_BATCH_FROM, signal.byte_length), dtype=np.uint8)
                index.add(np.arange(_BATCH_FROM), codes)
                # Codes read from a request are read-only (np.frombuffer), which numba
                # compiles apart: both kinds, one query, a few, and a batch (its own kernel).
                frozen = codes.copy()
                frozen.flags.writeable = False
                for some in (codes, frozen):
                    for count in (1, 2, _BATCH_FROM):
                        index.search(some[:count], signal.max_distance)
                index.remove([0])
        _warm = True


_this_thread = threading.local()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Searches this thread makes inside the block run on it alone, never split over the
    index's threads.

    For callers that already keep one search per core in flight (the service's match
    dispatcher): splitting each of those again would only add thread hand-offs (10% of a
    loaded server's busy time, measured with py-spy), not cores.
    """
    before = getattr(_this_thread, "alone", False)
    _this_thread.alone = True
    try:
        yield
    finally:
        _this_thread.alone = before


def _empty_result() -> Result:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)


class _Tables:
    """Multi-index tables of one segment: one bucket table per substring."""

    def __init__(self, codes: np.ndarray, bits: int, max_distance: int, pool: _Pool) -> None:
        n = codes.shape[0]
        if n + 1 >= 2**31:
            # Row numbers take 32 bits of a table entry; shard banks this large.
            raise ValueError("a segment holds at most 2**31 - 2 codes")
        self.m = _k.choose_split(bits, max_distance, n)
        self.starts, self.lengths = _k.split(bits, self.m)
        self.sk_at, self.sk_len = _k.sketch_at(self.starts, self.lengths, bits)
        # Entry k of table t: words 2k and 2k + 1 of row t (see _index_kernels.fill_table).
        self.entries = np.empty((self.m, 2 * n), dtype=np.uint64)
        self._n = n
        self._plans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        def build(t: int) -> tuple[np.ndarray, int]:
            start, length = int(self.starts[t]), int(self.lengths[t])
            hist = np.empty(1 << length, dtype=np.int32)
            _k.histogram(codes, start, length, hist)
            width = _k.lane_width(hist)
            directory = np.empty(_k.directory_blocks(length, width) * _k.BLOCK, dtype=np.uint8)
            _k.fill_table(
                codes, start, length, int(self.sk_at[t]), int(self.sk_len[t]), hist, width,
                directory, self.entries[t],
            )  # fmt: skip
            return directory, width

        built = pool.map(build, range(self.m))
        self.widths = np.array([w for _, w in built], dtype=np.int64)
        blocks = np.array([len(d) // _k.BLOCK for d, _ in built], dtype=np.int64)
        self.dir_base = np.concatenate([[0], np.cumsum(blocks)[:-1]]).astype(np.int64)
        # One array for all tables, aligned so that each block is one cache line.
        raw = np.empty(int(blocks.sum()) * _k.BLOCK + _k.BLOCK, dtype=np.uint8)
        skip = -raw.ctypes.data % _k.BLOCK
        self.directory = raw[skip : skip + int(blocks.sum()) * _k.BLOCK]
        for t, (d, _) in enumerate(built):
            at = int(self.dir_base[t]) * _k.BLOCK
            self.directory[at : at + len(d)] = d
        self.dir32 = self.directory.view(np.uint32)
        self.dir64 = self.directory.view(np.uint64)

    def plan(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probe radii and flip masks for a search at distance ``r`` (cached: a handful of
        distances are ever used)."""
        plan = self._plans.get(r)
        if plan is None:
            radii = _k.radii_for(self.lengths, r, self._n)
            plan = (radii, *_k.flip_masks(self.lengths, radii))
            self._plans[r] = plan
        return plan

    def radii(self, r: int) -> np.ndarray:
        """Probe radii for a search at distance ``r``."""
        return self.plan(r)[0]

    @property
    def nbytes(self) -> int:
        return int(self.directory.nbytes + self.entries.nbytes)


class _Segment:
    """An immutable batch of entries, sorted by id, with its tables (None: scanned flat).

    ``words`` has one more row than there are entries: a dead row of zeros, where a removed
    entry's places in the tables are pointed (see ``_index_kernels.scrub``). After
    construction only ``alive`` (1 -> 0) and the rows of removed entries (-> zeros) change, in
    that order, so a search that holds a segment never sees it half-built and never returns a
    removed entry.
    """

    def __init__(self, ids: np.ndarray, words: np.ndarray, tables: _Tables | None) -> None:
        self.ids = ids
        self.words = words
        self.alive = np.ones(len(ids) + 1, dtype=np.uint8)
        self.alive[len(ids)] = 0
        self.live = len(ids)
        self.tables = tables

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of the live entries among ``ids``."""
        if not len(self.ids) or not len(ids):
            return np.empty(0, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos[pos >= len(self.ids)] = 0
        hit = (self.ids[pos] == ids) & (self.alive[pos] == 1)
        return pos[hit]

    def kill(self, positions: np.ndarray) -> None:
        """Remove entries: dead at once for searches, then their hash values erased."""
        self.alive[positions] = 0
        self.live -= len(positions)
        t = self.tables
        if t is None:
            self.words[positions] = 0
        elif len(positions):
            _k.scrub(
                self.words, positions, t.starts, t.lengths, t.dir_base, t.widths, t.directory,
                t.dir32, t.dir64, t.entries, len(self.ids),
            )  # fmt: skip

    def search(
        self, queries: np.ndarray, r: int, cap: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = len(queries)
        out_pos = np.empty((q, cap), dtype=np.int32)
        out_dist = np.empty((q, cap), dtype=np.int32)
        counts = np.empty(q, dtype=np.int64)
        t = self.tables
        if t is None:
            _k.flat_search(self.words, self.alive, queries, r, out_pos, out_dist, counts)
        elif q >= _BATCH_FROM:
            plan = t.plan(r)
            step = _k.batch_rows(plan[2])
            for at in range(0, q, step):
                _k.mih_search_batch(
                    self.words, self.alive, t.starts, t.lengths, t.sk_at, t.sk_len, t.dir_base,
                    t.widths, t.directory, t.dir32, t.dir64, t.entries, *plan,
                    queries[at : at + step], r, out_pos[at : at + step],
                    out_dist[at : at + step], counts[at : at + step],
                )  # fmt: skip
        else:
            _k.mih_search(
                self.words, self.alive, t.starts, t.lengths, t.sk_at, t.sk_len, t.dir_base,
                t.widths, t.directory, t.dir32, t.dir64, t.entries, *t.plan(r), queries, r,
                out_pos, out_dist, counts,
            )  # fmt: skip
        return out_pos, out_dist, counts

    @property
    def nbytes(self) -> int:
        extra = self.tables.nbytes if self.tables is not None else 0
        return int(self.ids.nbytes + self.words.nbytes + self.alive.nbytes + extra)


class _Pool:
    """Runs compiled kernels (which release the GIL) on a few threads."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[int], _T], items: Iterable[int]) -> list[_T]:
        items = list(items)
        if self.threads == 1 or len(items) <= 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="matcher-index"
                )
        return list(self._executor.map(fn, items))


_T = TypeVar("_T")


@functools.cache
def _shuffle_table(bits: int) -> np.ndarray:
    table = _k.shuffle_table(bits)
    table.flags.writeable = False  # shared by every index of that width
    return table


# Matches per query the kernels have room for on their first pass; a query with more is run
# again with room for all of them (rare: a bank full of near-duplicates of one image).
_FIRST_CAP = 32
# From this many queries on, a segment is searched table by table in key order
# (``_index_kernels.mih_search_batch``); fewer gain nothing from ordering.
_BATCH_FROM = 100
# A batch is split across threads only into parts of at least this many queries: each part
# still gets the batch kernel, and small batches (one upload: about 40 codes) skip the hand-off.
_MIN_CHUNK = _BATCH_FROM


class HammingIndex:
    """Exact range search over the codes of one perceptual signal type (PDQ, pHash).

    Entries live in segments: a flat-scanned tail for recent small adds, and segments with
    multi-index tables. ``add`` appends to the tail (O(tail) work); a full tail becomes a
    table segment, and segments merge when the newer is at least half the size of the older, so
    each entry is rebuilt O(log n) times overall (amortised, never the whole index per request).
    ``remove`` marks entries dead in place, effective for the next search, and erases their
    codes from the segment's rows and tables at once (withdrawn hashes do not linger in
    memory); a segment that is a quarter dead is rebuilt without them, and ``compact()``
    rebuilds everything into one segment.

    Thread safety: ``add`` and ``remove`` hold a lock; ``compact`` holds it only to take a
    snapshot and to swap in its result. ``search`` holds none: it reads the current tuple of
    segments once (segments are replaced, never edited, apart from removal: ``alive`` 1 -> 0,
    then the removed rows erased), so a search running alongside a mutation sees each entry
    either before or after it. When ``add`` replaces an id's code, the new entry is published
    before the old one dies (a search may briefly see both). Searches from several threads run
    in parallel (the kernels release the GIL); a large batch is also split over ``threads``
    threads.

    ``flat_below`` sets the size under which a segment is scanned flat (0: always build tables,
    used by tests to check the multi-index path on small banks).
    """

    def __init__(
        self, signal: SignalType, *, flat_below: int = 8192, threads: int | None = None
    ) -> None:
        if signal.exact:
            raise ValueError(f"{signal.name} is an exact signal: use ExactIndex")
        if signal.bits % 64:
            raise ValueError(f"{signal.name} codes are not a whole number of 64-bit words")
        self.signal = signal
        self.flat_below = flat_below
        self.rebuild_inline_below = 1 << 18
        self._words = signal.bits // 64
        self._shuffle = _shuffle_table(signal.bits)
        self._pool = _Pool(threads if threads is not None else (os.cpu_count() or 1))
        self._lock = threading.Lock()
        # Segments with tables (oldest first), the flat tail of recent small adds, and the
        # tuple of both that searches read (replaced whole, never edited).
        self._built: list[_Segment] = []
        self._tail: _Segment | None = None
        self._segments: tuple[_Segment, ...] = ()
        # While compact() rebuilds a snapshot of the segments outside the lock, mutations
        # leave those segments in place (no merges into them) and journal the ids they kill.
        self._compact_lock = threading.Lock()
        self._frozen: tuple[_Segment, ...] = ()
        self._journal: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return sum(s.live for s in self._segments)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays (codes, ids, tables)."""
        return sum(s.nbytes for s in self._segments)

    def _to_words(
        self, codes: np.ndarray, order: np.ndarray | None = None, *, spare: bool = False
    ) -> np.ndarray:
        """Codes (rows ``order``) as uint64 words with their bits shuffled (see
        ``_index_kernels.shuffle_table``): the form every segment and query uses. ``spare``
        adds the zero row a segment keeps at its end (see ``_Segment``)."""
        if order is None:
            order = np.arange(len(codes), dtype=np.int64)
        n = len(order)
        out = np.empty((n + spare, self._words), dtype=np.uint64)
        out[n:] = 0
        chunks = min(self._pool.threads, n // 100_000)
        if chunks <= 1:
            _k.shuffle_rows(codes, order, self._shuffle, out)
            return out
        step = -(-n // chunks)

        def run(c: int) -> None:
            lo, hi = c * step, min(n, (c + 1) * step)
            _k.shuffle_rows(codes, order[lo:hi], self._shuffle, out[lo:hi])

        self._pool.map(run, range(chunks))
        return out

    def _segment(self, ids: np.ndarray, words: np.ndarray) -> _Segment:
        """A segment of entries given with words already shuffled, in any id order, and one
        spare zero row after them."""
        n = len(ids)
        if n > 1 and not (ids[1:] > ids[:-1]).all():
            order = np.argsort(ids, kind="stable")  # near linear when ids arrive in order
            ids = np.ascontiguousarray(ids[order])
            words = np.concatenate([words[:n][order], words[n:]])
        tables = None
        if n and n >= self.flat_below:
            tables = _Tables(words[:n], self.signal.bits, self.signal.max_distance, self._pool)
        return _Segment(ids, words, tables)

    def _merge(self, parts: Sequence[_Segment]) -> _Segment:
        keep = [s.alive[: len(s)].astype(bool) for s in parts]
        ids = np.concatenate([s.ids[k] for s, k in zip(parts, keep, strict=True)])
        spare = np.zeros((1, self._words), dtype=np.uint64)
        words = np.concatenate(
            [*(s.words[: len(s)][k] for s, k in zip(parts, keep, strict=True)), spare]
        )
        return self._segment(ids, words)

    def _is_frozen(self, segment: _Segment) -> bool:
        return any(segment is f for f in self._frozen)

    def _kill(self, segment: _Segment, positions: np.ndarray) -> None:
        if self._journal is not None and len(positions):
            self._journal.append(segment.ids[positions])
        segment.kill(positions)

    def _publish(self, built: list[_Segment], tail: _Segment | None) -> None:
        self._built = built
        self._tail = tail if tail is not None and len(tail) else None
        self._segments = (*built, self._tail) if self._tail is not None else tuple(built)

    def add(self, ids: np.ndarray | Sequence[int], codes: np.ndarray) -> None:
        """Add entries; an id already present has its code replaced."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        codes_arr = _check_codes(self.signal, codes, len(ids_arr))
        if not len(ids_arr):
            return
        order = np.argsort(ids_arr, kind="stable")  # near linear when ids arrive in order
        ids_arr = ids_arr[order]
        if len(ids_arr) > 1 and (ids_arr[1:] == ids_arr[:-1]).any():
            raise ValueError("ids in one add must be distinct")
        words = self._to_words(codes_arr, order, spare=True)
        with self._lock:
            old = [(s, s.positions(ids_arr)) for s in self._segments]
            new = self._segment(ids_arr, words)
            if any(len(positions) for _, positions in old):
                # Replacing codes: publish the new entries before the old ones die, so a
                # concurrent search never misses the id (it may briefly see both).
                self._segments = (*self._segments, new)
                for segment, positions in old:
                    self._kill(segment, positions)
            built, tail = list(self._built), self._tail
            if tail is not None and self._is_frozen(tail):
                built.append(tail)  # compact() is rebuilding it: start a new tail
                tail = None
            if new.tables is None:
                # Recent small adds share one flat tail, so a search does not pay a kernel
                # call per add; folding into it costs at most ``flat_below`` rows.
                tail = self._merge([tail, new]) if tail is not None else new
                if tail.tables is not None:
                    built.append(tail)
                    tail = None
            else:
                built.append(new)
            self._publish(self._settle(built), tail)

    def add_batches(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add ``(ids, codes)`` batches (e.g. pages read from the store) with one build.

        Many separate ``add`` calls of large batches would merge segments again and again
        (O(n log n) rows rebuilt); this gathers them first (O(n)).
        """
        ids, codes = [], []
        for batch_ids, batch_codes in batches:
            ids.append(_id_array(batch_ids))
            codes.append(_check_codes(self.signal, batch_codes, len(ids[-1])))
        if ids:
            self.add(np.concatenate(ids), np.concatenate(codes))

    def _settle(self, built: list[_Segment]) -> list[_Segment]:
        """Merge the newest segments while the newer is at least half the older (so there
        are at most log2(n) segments and each entry is rebuilt O(log n) times overall)."""
        while (
            len(built) >= 2
            and 2 * built[-1].live >= built[-2].live
            and not self._is_frozen(built[-2])
        ):
            newer, older = built.pop(), built.pop()
            built.append(self._merge([older, newer]))
        return built

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries by id (unknown ids are ignored); return how many were removed.

        Effective for the next search. A segment left a quarter dead is rebuilt without its
        dead entries, so the cost is amortised over the removals that killed them: inline for
        segments under ``rebuild_inline_below`` rows (well under a second), by ``compact()``
        on a background thread for larger ones, so that no removal waits for seconds.
        """
        ids_arr = _sorted_unique(_id_array(ids))
        removed = 0
        with self._lock:
            for segment in self._segments:
                positions = segment.positions(ids_arr)
                self._kill(segment, positions)
                removed += len(positions)

            background = False

            def fresh(s: _Segment) -> _Segment:
                nonlocal background
                if self._is_frozen(s) or (len(s) - s.live) * 4 <= len(s):
                    return s
                if len(s) >= self.rebuild_inline_below:
                    background = True  # too slow for a request: compact() in a thread
                    return s
                return self._merge([s])

            if removed:
                tail = fresh(self._tail) if self._tail is not None else None
                self._publish([fresh(s) for s in self._built], tail)
        if background and not self._compact_lock.locked():
            threading.Thread(target=self.compact, name="matcher-compact", daemon=True).start()
        return removed

    def compact(self) -> None:
        """Rebuild everything into one segment without removed entries.

        For quiet moments or a background thread: it builds outside the mutation lock, so
        searches, adds and removes carry on meanwhile (removals made during the build are
        applied to the new segment before it replaces the old ones). One compaction runs at
        a time.
        """
        with self._compact_lock:
            with self._lock:
                snapshot = self._segments
                if not snapshot:
                    return
                self._frozen, self._journal = snapshot, []
            try:
                merged = self._merge(snapshot)
                with self._lock:
                    killed = self._journal
                    if killed:
                        ids = _sorted_unique(np.concatenate(killed))
                        merged.kill(merged.positions(ids))
                    rest = [s for s in self._built if not self._is_frozen(s)]
                    tail = self._tail
                    if tail is not None and self._is_frozen(tail):
                        tail = None
                    built = ([merged] if len(merged) else []) + rest
                    self._frozen, self._journal = (), None
                    self._publish(self._settle(built), tail)
            finally:
                with self._lock:
                    self._frozen, self._journal = (), None

    def search(self, codes: np.ndarray, max_distance: int | None = None) -> list[Result]:
        """Return every entry within ``max_distance`` of each query code (see module doc)."""
        distance = self.signal.check_distance(max_distance, field="max_distance")
        queries = self._to_words(_check_codes(self.signal, codes))
        segments = self._segments  # one snapshot for the whole call
        n = len(queries)
        if n == 0:
            return []
        chunks = min(self._pool.threads, n // _MIN_CHUNK)
        if chunks <= 1 or getattr(_this_thread, "alone", False):
            return _search_chunk(segments, queries, distance)
        step = -(-n // chunks)

        def run(c: int) -> list[Result]:
            return _search_chunk(segments, queries[c * step : (c + 1) * step], distance)

        out: list[Result] = []
        for part in self._pool.map(run, range(chunks)):
            out.extend(part)
        return out


def _one_query(segments: Sequence[_Segment], query: np.ndarray, r: int) -> Result:
    """``_search_chunk`` for a single query, with less numpy overhead (the latency path)."""
    ids, dists = [], []
    for segment in segments:
        pos, dist, counts = segment.search(query, r, _FIRST_CAP)
        c = int(counts[0])
        if c > _FIRST_CAP:
            pos, dist, counts = segment.search(query, r, c)
        if c:
            ids.append(segment.ids[pos[0, :c]])
            dists.append(dist[0, :c])
    if not ids:
        return _empty_result()
    all_ids = np.concatenate(ids) if len(ids) > 1 else ids[0]
    all_d = np.concatenate(dists) if len(dists) > 1 else dists[0]
    if len(all_ids) > 1:
        # See _search_chunk on repeated ids.
        order = np.lexsort((all_d, all_ids))
        all_ids, all_d = all_ids[order], all_d[order]
        first = np.ones(len(all_ids), dtype=bool)
        first[1:] = all_ids[1:] != all_ids[:-1]
        all_ids, all_d = all_ids[first], all_d[first]
        order = np.lexsort((all_ids, all_d))
        all_ids, all_d = all_ids[order], all_d[order]
    return all_ids, all_d


def _search_chunk(segments: Sequence[_Segment], queries: np.ndarray, r: int) -> list[Result]:
    """Search every segment and merge the matches per query, best first (vectorised: the
    per-query Python work is one slice)."""
    nq = len(queries)
    if nq == 1:
        return [_one_query(segments, queries, r)]
    qs, ids, dists = [], [], []
    for segment in segments:
        pos, dist, counts = segment.search(queries, r, _FIRST_CAP)
        over = counts > _FIRST_CAP
        if over.any():
            # Rare: redo only those queries with room for all their matches.
            which = np.flatnonzero(over)
            big_pos, big_dist, big_counts = segment.search(
                queries[which], r, int(counts[which].max())
            )
            keep = np.arange(big_pos.shape[1]) < big_counts[:, None]
            qs.append(np.repeat(which, big_counts))
            ids.append(segment.ids[big_pos[keep]])
            dists.append(big_dist[keep])
            counts = np.where(over, 0, counts)
        keep = np.arange(_FIRST_CAP) < counts[:, None]
        qs.append(np.repeat(np.arange(nq), counts))
        ids.append(segment.ids[pos[keep]])
        dists.append(dist[keep])
    if not qs:
        return [_empty_result() for _ in range(nq)]
    all_q = np.concatenate(qs)
    all_ids = np.concatenate(ids)
    all_d = np.concatenate(dists)
    # An id appears once per query, except in one race: a search that reads a row while
    # ``remove`` erases it may see it through two tables. Drop such repeats.
    order = np.lexsort((all_d, all_ids, all_q))
    all_q, all_ids, all_d = all_q[order], all_ids[order], all_d[order]
    first = np.ones(len(all_q), dtype=bool)
    first[1:] = (all_q[1:] != all_q[:-1]) | (all_ids[1:] != all_ids[:-1])
    if not first.all():
        all_q, all_ids, all_d = all_q[first], all_ids[first], all_d[first]
    order = np.lexsort((all_ids, all_d, all_q))
    all_ids, all_d = all_ids[order], all_d[order]
    bounds = np.searchsorted(all_q[order], np.arange(nq + 1)).tolist()
    return [
        (all_ids[bounds[i] : bounds[i + 1]], all_d[bounds[i] : bounds[i + 1]]) for i in range(nq)
    ]


class ExactIndex:
    """Exact-match lookup for cryptographic digests (MD5, SHA-256): a plain mapping.

    Thread safety: mutations hold a lock; a search reads without one. The ids under a digest
    are an immutable tuple, replaced whole, so a search never sees one half-changed.
    """

    def __init__(self, signal: SignalType) -> None:
        if not signal.exact:
            raise ValueError(f"{signal.name} is not an exact signal: use HammingIndex")
        self.signal = signal
        self._lock = threading.Lock()
        self._by_code: dict[bytes, tuple[int, ...]] = {}
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
                self._by_code[key] = (*self._by_code.get(key, ()), i)

    def add_batches(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add ``(ids, codes)`` batches, as ``HammingIndex.add_batches``."""
        for batch_ids, batch_codes in batches:
            self.add(batch_ids, batch_codes)

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
            holders = tuple(h for h in self._by_code[key] if h != i)
            if holders:
                self._by_code[key] = holders
            else:
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
            codes = codes_of([hashes[p] for p in positions])
            self.add_codes(SIGNALS[name], ids_arr[positions], codes)

    def add_codes(
        self, signal: SignalType, ids: np.ndarray | Sequence[int], codes: np.ndarray
    ) -> None:
        """Add codes of one signal type (the fast path for bulk loading)."""
        self._get(signal).add(ids, codes)

    def add_batches(
        self, signal: SignalType, batches: Iterable[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """Add ``(ids, codes)`` batches of one signal type with one build (start-up)."""
        self._get(signal).add_batches(batches)

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
