"""Compiled kernels behind ``matcher.index``: multi-index hashing and the flat scan.

Codes are held as rows of little-endian ``uint64`` words (a PDQ hash is 4 words). A code's bits
are numbered 0..bits-1 across its words, word 0 first, bit 0 the least significant; a substring
is a run of consecutive bit numbers. Which bit is which does not matter for correctness: the
Hamming distance counts differing bits whatever their order, and queries and stored codes are cut
the same way.

Why multi-index hashing is exact (the pigeonhole principle, generalised): split the bits into
``m`` disjoint substrings and give substring ``i`` a probe radius ``t_i >= -1`` (``-1``: the
table is not probed) such that ``sum(t_i + 1) >= r + 1``. If a stored code is within ``r`` of the
query but differs in more than ``t_i`` bits on every substring, then its distance is at least
``sum(t_i + 1) >= r + 1 > r``: a contradiction. So every code within ``r`` agrees with the query
within ``t_i`` bits on at least one substring, and is found by enumerating, for each table, every
key within ``t_i`` bits of the query's key and reading those buckets. Every candidate is then
verified against the full code, so nothing beyond ``r`` is returned either.

Duplicates are dropped without shared state (no stamp array, so searches can run concurrently):
a match found through table ``j`` is reported only if no earlier probed table ``u < j`` would
also have found it, i.e. its substring distance on ``u`` exceeds ``t_u``. That test runs only on
true matches, which are few.

Every kernel releases the GIL (``nogil``) and is single-threaded: parallelism comes from Python
threads, which is safe under any numba threading layer and with concurrent callers.
"""

from __future__ import annotations

from math import comb

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Widest substring we build a table for: its bucket offsets take 4 * 2**bits bytes.
MAX_SUBSTRING_BITS = 26


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """The CPU's population count on a uint64 (numba has no builtin for it)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


def _prefetch_codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    indices = [
        context.cast(builder, v, t, types.intp)
        for v, t in zip(args[1:], signature.args[1:], strict=True)
    ]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, indices, wraparound=False)
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    # read, keep in all cache levels, data cache
    builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
    return context.get_dummy_value()


@intrinsic
def _prefetch1(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """Ask the CPU to start loading ``arr[i]`` into cache (no effect on results).

    Random reads dominate a search; issuing them well ahead of use keeps many cache misses in
    flight at once instead of waiting for each in turn.
    """
    return types.void(arr, i), _prefetch_codegen


@intrinsic
def _prefetch2(typingctx, arr, i, j):  # type: ignore[no-untyped-def]
    """``_prefetch1`` for ``arr[i, j]``."""
    return types.void(arr, i, j), _prefetch_codegen


# How many iterations ahead the kernels prefetch.
_AHEAD = 32


@numba.njit(inline="always")
def _extract(row, start, length):  # type: ignore[no-untyped-def]
    """Bits ``start .. start+length-1`` (length <= 32) of a code held as uint64 words."""
    w = start >> 6
    off = start & 63
    v = row[w] >> np.uint64(off)
    if off + length > 64:
        v |= row[w + 1] << np.uint64(64 - off)
    return v & ((np.uint64(1) << np.uint64(length)) - np.uint64(1))


@numba.njit(nogil=True, cache=True)
def build_table(codes, start, length, offsets, perm):  # type: ignore[no-untyped-def]
    """Counting-sort the rows of ``codes`` by one substring.

    ``offsets`` (size ``2**length + 1``) receives each key's bucket bounds; ``perm`` (size
    ``n + PAD``) receives row numbers grouped by key, ascending within a bucket.
    """
    n = codes.shape[0]
    offsets[:] = 0
    for i in range(n):
        offsets[_extract(codes[i], start, length) + 1] += 1
    for k in range(1, offsets.shape[0]):
        offsets[k] += offsets[k - 1]
    fill = offsets[:-1].copy()
    for i in range(n):
        k = _extract(codes[i], start, length)
        perm[fill[k]] = i
        fill[k] += 1
    perm[n:] = 0


@numba.njit(inline="always")
def _distance(codes, p, q):  # type: ignore[no-untyped-def]
    d = 0
    for w in range(q.shape[0]):
        d += _popcount(codes[p, w] ^ q[w])
    return d


@numba.njit(nogil=True, cache=True)
def flat_search(codes, alive, queries, r, out_pos, out_dist, counts):  # type: ignore[no-untyped-def]
    """Compare every query with every live row: the reference path for small segments.

    Writes up to ``out_pos.shape[1]`` matches per query and the true number in ``counts``.
    """
    cap = out_pos.shape[1]
    for qi in range(queries.shape[0]):
        q = queries[qi]
        c = 0
        for p in range(codes.shape[0]):
            d = _distance(codes, p, q)
            if d <= r and alive[p]:
                if c < cap:
                    out_pos[qi, c] = p
                    out_dist[qi, c] = d
                c += 1
        counts[qi] = c


@numba.njit(inline="always")
def _grow(buf, need):  # type: ignore[no-untyped-def]
    if need <= buf.shape[0]:
        return buf
    bigger = np.empty(max(need, 2 * buf.shape[0]), dtype=buf.dtype)
    bigger[: buf.shape[0]] = buf
    return bigger


# Row lists are padded with this many spare entries so that every bucket read can copy a
# fixed-size block without a bounds check; the count says how many of them are real.
PAD = 8


@numba.njit(nogil=True, cache=True)
def mih_search(  # type: ignore[no-untyped-def]
    codes, alive, starts, lengths, table_base, offsets, perm, radii, queries, r,
    out_pos, out_dist, counts,
):  # fmt: skip
    """Multi-index range search (see the module docstring for why it is exact).

    ``offsets`` holds every table's bucket bounds back to back, table ``t`` from
    ``table_base[t]``; ``perm[t, :n]`` lists row numbers grouped by their key in table ``t``
    (``PAD`` spare entries follow).

    The time goes into random reads (bucket bounds, bucket contents, candidate codes), so each
    query runs in phases whose loops issue independent loads, with prefetches some iterations
    ahead: the CPU then overlaps many cache misses instead of waiting for each in turn, as a
    probe-by-probe loop would.
    """
    m = starts.shape[0]
    cap = out_pos.shape[1]
    nw = queries.shape[1]
    stride = perm.shape[1]
    flat = perm.reshape(-1)
    n_probes = 0
    for t in range(m):
        for k in range(radii[t] + 1):
            n_probes += _comb(lengths[t], k)
    probe_at = np.empty(n_probes + 1, dtype=np.int64)
    probe_start = np.empty(m + 1, dtype=np.int64)
    lo = np.empty(n_probes + _AHEAD, dtype=np.int64)
    size = np.empty(n_probes, dtype=np.int64)
    cand_start = np.empty(m + 1, dtype=np.int64)
    cand = np.empty(8192, dtype=np.int64)
    cand_dist = np.empty(8192, dtype=np.int64)
    xor = np.empty(nw, dtype=np.uint64)
    flips = np.empty(64, dtype=np.int64)
    for qi in range(queries.shape[0]):
        q = queries[qi]
        # Phase 1: every key within each table's radius of the query's key.
        np_ = 0
        for t in range(m):
            probe_start[t] = np_
            length = lengths[t]
            key = _extract(q, starts[t], length)
            base = table_base[t]
            for k in range(radii[t] + 1):
                # every set of k bit positions to flip, in lexicographic order
                for i in range(k):
                    flips[i] = i
                while True:
                    probe = key
                    for i in range(k):
                        probe ^= np.uint64(1) << np.uint64(flips[i])
                    probe_at[np_] = base + np.int64(probe)
                    _prefetch1(offsets, probe_at[np_])
                    np_ += 1
                    i = k - 1
                    while i >= 0 and flips[i] == length - k + i:
                        i -= 1
                    if i < 0:
                        break
                    flips[i] += 1
                    for j in range(i + 1, k):
                        flips[j] = flips[j - 1] + 1
        probe_start[m] = np_
        # Phase 2: bucket bounds, as positions in the flattened row lists.
        for t in range(m):
            for i in range(probe_start[t], probe_start[t + 1]):
                start = offsets[probe_at[i]]
                lo[i] = t * stride + start
                size[i] = offsets[probe_at[i] + 1] - start
        for i in range(np_, np_ + _AHEAD):
            lo[i] = 0
        # Phase 3: bucket contents, PAD entries at a time.
        nc = 0
        for t in range(m):
            cand_start[t] = nc
            for i in range(probe_start[t], probe_start[t + 1]):
                _prefetch1(flat, lo[i + _AHEAD])
                if nc + size[i] + PAD > cand.shape[0]:
                    cand = _grow(cand, nc + size[i] + PAD)
                    cand_dist = _grow(cand_dist, nc + size[i] + PAD)
                at = lo[i]
                for k in range(PAD):
                    cand[nc + k] = flat[at + k]
                for k in range(PAD, size[i]):
                    cand[nc + k] = flat[at + k]
                nc += size[i]
        cand_start[m] = nc
        # Phase 4: distances.
        for i in range(nc):
            if i + _AHEAD < nc:
                _prefetch2(codes, cand[i + _AHEAD], 0)
            p = cand[i]
            d = 0
            for w in range(nw):
                d += _popcount(codes[p, w] ^ q[w])
            cand_dist[i] = d
        # Phase 5: the few matches; drop those an earlier table also finds.
        c = 0
        for t in range(m):
            for i in range(cand_start[t], cand_start[t + 1]):
                d = cand_dist[i]
                p = cand[i]
                if d > r or not alive[p]:
                    continue
                for w in range(nw):
                    xor[w] = codes[p, w] ^ q[w]
                dup = False
                for u in range(t):
                    if (
                        radii[u] >= 0
                        and _popcount(_extract(xor, starts[u], lengths[u])) <= radii[u]
                    ):
                        dup = True
                        break
                if dup:
                    continue
                if c < cap:
                    out_pos[qi, c] = p
                    out_dist[qi, c] = d
                c += 1
        counts[qi] = c


@numba.njit(inline="always")
def _comb(n, k):  # type: ignore[no-untyped-def]
    c = 1
    for i in range(k):
        c = c * (n - i) // (i + 1)
    return c


def split(bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``bits`` into ``m`` consecutive substrings, the longer ones first."""
    lengths = np.array([bits // m + (1 if i < bits % m else 0) for i in range(m)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, lengths


# Relative costs of the two kinds of random memory read: a probe reads a bucket's bounds and
# then the start of the bucket; a candidate reads one stored code.
_PROBE_COST = 2.0
_CANDIDATE_COST = 1.0


def radii_for(lengths: np.ndarray, r: int, n: int) -> np.ndarray:
    """Probe radii with ``sum(t_i + 1) == r + 1`` (exact, see above) at the lowest cost.

    Raising a table's radius from ``t`` to ``t + 1`` adds ``C(L, t+1)`` probes, each reading
    about ``n / 2**L`` candidates on uniform codes; those increments grow with ``t``, so taking
    the cheapest one ``r + 1`` times gives the cheapest plan.
    """
    radii = np.full(len(lengths), -1, dtype=np.int64)
    for _ in range(r + 1):
        # A radius of L already probes every key of an L-bit table: never go past it.
        costs = [
            comb(int(length), int(radii[i]) + 1)
            * (_PROBE_COST + _CANDIDATE_COST * n / 2.0 ** int(length))
            if radii[i] < length
            else float("inf")
            for i, length in enumerate(lengths)
        ]
        radii[int(np.argmin(costs))] += 1
    return radii


def plan_cost(lengths: np.ndarray, r: int, n: int) -> float:
    """Expected random reads per query on uniform codes for a split and radius."""
    radii = radii_for(lengths, r, n)
    total = 0.0
    for length, t in zip(lengths.tolist(), radii.tolist(), strict=True):
        probes = sum(comb(length, k) for k in range(t + 1))
        total += probes * (_PROBE_COST + _CANDIDATE_COST * n / 2.0**length)
    return total


def choose_split(bits: int, max_distance: int, n: int) -> int:
    """Number of substrings for a segment of ``n`` codes searched up to ``max_distance``.

    The cheapest split whose bucket offsets take at most half the memory of its row lists
    (``sum(2**L) <= m * n / 2``), so tables stay within about ``4 * m`` bytes per code.
    """
    best_m, best_cost = bits // 8, float("inf")
    for m in range(max(1, -(-bits // MAX_SUBSTRING_BITS)), bits // 4 + 1):
        _, lengths = split(bits, m)
        if int(lengths.max()) > MAX_SUBSTRING_BITS:
            continue
        if sum(2 ** int(length) for length in lengths) > m * max(n, 1024) / 2:
            continue
        cost = plan_cost(lengths, max_distance, n)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m
