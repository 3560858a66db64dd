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

Bucket entries carry a sketch, so that most candidates are rejected without reading their code:
each table's row list holds, beside each row number, ``SKETCH_BITS`` (96) other bits of that row's
code, the ones after the table's own substring. Bits are disjoint, so a stored code's distance to
the query is at least its distance on the table's substring (the probe's flip count) plus its
distance on the sketch bits; a candidate whose sum exceeds ``r`` cannot match and is dropped
right there, exactly. For an unrelated code the 96 sketch bits differ in about 48 places, more
than 31 in all but about 1 in 5,000 cases, so nearly every candidate is settled by the bucket's own
bytes, read in order, instead of a random read of a 32-byte code elsewhere (what a candidate cost
before: about half of a search's time). That is what lets tables be short (16 bits at 1M codes:
272 probes and about 4,150 candidates per query at distance 31, instead of 2,032 probes and 727
random code reads), at 16 bytes per entry instead of 4.

Every kernel releases the GIL (``nogil``) and is single-threaded: parallelism comes from Python
threads, which is safe under any numba threading layer and with concurrent callers.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Widest substring we build a table for: its directory takes about 2**bits bytes.
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
_AHEAD = 16


@numba.njit(inline="always")
def _extract(row, start, length):  # type: ignore[no-untyped-def]
    """Bits ``start .. start+length-1`` (length <= 32) of a code held as uint64 words."""
    w = start >> 6
    off = start & 63
    v = row[w] >> np.uint64(off)
    if off + length > 64:
        v |= row[w + 1] << np.uint64(64 - off)
    return v & ((np.uint64(1) << np.uint64(length)) - np.uint64(1))


# Bucket directory: per table, blocks of 64 bytes (one cache line), each covering ``60 // width``
# consecutive keys with ``width``-byte lanes (little-endian, bytes 0-59) and, in bytes 60-63,
# where the first of those buckets starts in the table's row list. Lane ``k`` holds the number of
# rows in the block's buckets 0..k (a running total), so a bucket starts at its block's start
# plus the lane before it, and its size is the difference of the two: two byte reads per probe,
# whatever the lane (a sum of the sizes before the lane cost a third of a search). One line read
# per probe, at about 1.07 bytes per key with 1-byte lanes (4 bytes for plain offsets); that pays
# for longer substrings, which means fewer candidates. A table whose fullest block holds more
# than 255 rows (skewed codes) uses 2- or 4-byte lanes: slower, never wrong.
BLOCK = 64
_BLOCK_DATA = 60


def lane_width(hist: np.ndarray) -> int:
    """Bytes per lane for a table with these rows per key: the narrowest whose blocks'
    running totals fit."""
    for width, most in ((1, 0xFF), (2, 0xFFFF)):
        per_block = _BLOCK_DATA // width
        pad = -len(hist) % per_block
        totals = np.concatenate([hist, np.zeros(pad, hist.dtype)]).astype(np.int64)
        if int(totals.reshape(-1, per_block).sum(axis=1).max(initial=0)) <= most:
            return width
    return 4


def directory_blocks(length: int, width: int) -> int:
    """Number of 64-byte blocks in the directory of a ``length``-bit table."""
    per_block = _BLOCK_DATA // width
    return -(-(1 << length) // per_block)


@numba.njit(nogil=True, cache=True)
def histogram(codes, start, length, hist):  # type: ignore[no-untyped-def]
    """Count the rows per key of one substring; return the largest count."""
    hist[:] = 0
    for i in range(codes.shape[0]):
        hist[_extract(codes[i], start, length)] += 1
    return hist.max()


# Bits of a code's sketch in each table's entries (see the module docstring): 96 is what rejects
# unrelated codes (a 64-bit sketch would let through 4 in 10 of them at distance 31).
SKETCH_BITS = 96


@numba.njit(inline="always")
def _cyclic(row, pos, length, bits):  # type: ignore[no-untyped-def]
    """``length`` (<= 32) bits of a code from bit ``pos`` on, wrapping from the last to bit 0."""
    if length <= 0:
        return np.uint64(0)
    if pos >= bits:  # callers pass pos < 2 * bits (a bit number plus at most 64)
        pos -= bits
    if pos + length <= bits:
        return _extract(row, pos, length)
    low = bits - pos
    return _extract(row, pos, low) | (_extract(row, 0, length - low) << np.uint64(low))


@numba.njit(inline="always")
def _sketch(row, at, length, bits):  # type: ignore[no-untyped-def]
    """A code's sketch bits ``at .. at+length-1`` (cyclic, ``length <= 96``) as the two words
    of an entry: bits 0-63 in the first, 64-95 in the high half of the second."""
    a = _cyclic(row, at, min(32, length), bits)
    a |= _cyclic(row, at + 32, min(32, length - 32), bits) << np.uint64(32)
    b = _cyclic(row, at + 64, min(32, length - 64), bits) << np.uint64(32)
    return a, b


_ROW = np.uint64(0xFFFFFFFF)


@numba.njit(nogil=True, cache=True)
def fill_table(codes, start, length, sk_at, sk_len, hist, width, directory, entries):  # type: ignore[no-untyped-def]
    """Write one table's directory (see ``BLOCK``: running totals per block) and entries from
    its ``histogram``.

    ``entries`` (``2 * n`` uint64) receives, grouped by key and ascending by row within a
    bucket, each row's entry: its sketch (``sk_len`` bits from bit ``sk_at``, see ``_sketch``)
    with the row number in the low 32 bits of the second word. ``hist`` is used up (it becomes
    the fill positions).
    """
    nkeys = 1 << length
    bits = codes.shape[1] * 64
    per_block = _BLOCK_DATA // width
    pos = 0
    for blk in range(directory.shape[0] // BLOCK):
        at = blk * BLOCK
        for b in range(4):
            directory[at + _BLOCK_DATA + b] = (pos >> (8 * b)) & 0xFF
        total = 0
        for lane in range(per_block):
            k = blk * per_block + lane
            if k < nkeys:
                c = hist[k]
                hist[k] = pos
                pos += c
                total += c
            for b in range(width):
                directory[at + lane * width + b] = (total >> (8 * b)) & 0xFF
    # Row numbers first (4-byte scattered writes), then the entries in order, reading each
    # row's code ahead: scattering 16-byte entries straight away took 5x longer at 10M codes.
    n = codes.shape[0]
    rows = np.empty(n + _AHEAD, dtype=np.int64)
    for i in range(n):
        k = _extract(codes[i], start, length)
        rows[hist[k]] = i
        hist[k] += 1
    rows[n:] = 0
    for j in range(n):
        _prefetch2(codes, rows[j + _AHEAD], 0)
        i = rows[j]
        a, b = _sketch(codes[i], sk_at, sk_len, bits)
        entries[2 * j] = a
        entries[2 * j + 1] = b | np.uint64(i)


def sketch_at(starts: np.ndarray, lengths: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each table's sketch starts (right after its substring, cyclically) and how many
    bits it has (at most ``SKETCH_BITS``, and never the table's own bits)."""
    at = (starts + lengths) % bits
    return at.astype(np.int64), np.minimum(SKETCH_BITS, bits - lengths).astype(np.int64)


def shuffle_table(bits: int, seed: int = 20240531) -> np.ndarray:
    """Lookup table for a fixed pseudo-random permutation of a code's bits.

    Real perceptual hashes have correlated bits (neighbouring DCT coefficients), so runs of
    consecutive bits are far from uniform: on PDQ hashes of photos, 16-bit substrings collide
    about twice as often as random ones (up to 5x for some substrings), which means larger
    buckets and more candidates. Shuffling the bits first brings that to about 1.2x. Hamming
    distances do not change, because stored codes and queries are shuffled alike.

    ``table[i, v]`` is the shuffled image (as uint64 words) of byte ``i`` holding value ``v``;
    a code's image is the OR over its bytes. The seed is fixed: stored codes never leave the
    process, but every segment and query must agree.
    """
    dest = np.random.default_rng(seed).permutation(bits)
    nbytes, nwords = bits // 8, bits // 64
    table = np.zeros((nbytes, 256, nwords), dtype=np.uint64)
    for i in range(nbytes):
        for v in range(256):
            for k in range(8):
                if v >> k & 1:
                    d = int(dest[8 * i + k])
                    table[i, v, d >> 6] |= np.uint64(1) << np.uint64(d & 63)
    return table


@numba.njit(nogil=True, cache=True)
def shuffle_rows(codes, order, table, out):  # type: ignore[no-untyped-def]
    """``out[j]`` = the shuffled words of ``codes[order[j]]`` (see ``shuffle_table``)."""
    nbytes = codes.shape[1]
    nwords = out.shape[1]
    for j in range(order.shape[0]):
        row = codes[order[j]]
        for w in range(nwords):
            out[j, w] = 0
        for i in range(nbytes):
            v = row[i]
            for w in range(nwords):
                out[j, w] |= table[i, v, w]


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


@numba.njit(nogil=True, cache=True)
def mih_search(  # type: ignore[no-untyped-def]
    codes, alive, starts, lengths, sk_at, sk_len, dir_base, widths, dir8, dir32, dir64, entries,
    radii, flips, flip_start, queries, r, out_pos, out_dist, counts,
):  # fmt: skip
    """Multi-index range search (see the module docstring for why it is exact).

    Table ``t``'s directory (see ``BLOCK``) starts at block ``dir_base[t]`` of ``dir8`` (the
    same bytes seen as uint32 in ``dir32`` and uint64 in ``dir64``), with ``widths[t]``-byte
    sizes; ``entries[t]`` holds its entries grouped by key (see ``fill_table``). Table ``t`` is
    probed at the query's key XOR each of ``flips[flip_start[t] : flip_start[t + 1]]``: every
    mask of at most ``radii[t]`` bits.

    The time goes into random reads (directory lines, buckets), so each query runs in phases
    whose loops issue independent loads, with prefetches ahead (every line of a bucket, not
    only its first: a bucket spans several): the CPU then overlaps many cache misses instead of
    waiting for each in turn.
    """
    m = starts.shape[0]
    cap = out_pos.shape[1]
    nw = queries.shape[1]
    bits = nw * 64
    stride = entries.shape[1]
    flat = entries.reshape(-1)
    n_probes = flip_start[m]
    probe_blk = np.empty(n_probes + _AHEAD, dtype=np.int64)
    probe_lane = np.empty(n_probes + 1, dtype=np.int64)
    lo = np.empty(n_probes + _AHEAD, dtype=np.int64)
    size = np.empty(n_probes + _AHEAD, dtype=np.int64)
    room = np.empty(n_probes, dtype=np.int64)
    table = np.empty(n_probes, dtype=np.int64)
    qa = np.empty(m, dtype=np.uint64)
    qb = np.empty(m, dtype=np.uint64)
    found = np.empty(1024, dtype=np.int64)
    xor = np.empty(nw, dtype=np.uint64)
    for qi in range(queries.shape[0]):
        q = queries[qi]
        # Phase 1: every key within each table's radius of the query's key (the query's key
        # XOR each precomputed flip mask), as (directory block, lane).
        np_ = 0
        for t in range(m):
            key = np.int64(_extract(q, starts[t], lengths[t]))
            qa[t], qb[t] = _sketch(q, sk_at[t], sk_len[t], bits)
            width = widths[t]
            per_block = _BLOCK_DATA // width
            first = dir_base[t]
            for i in range(flip_start[t], flip_start[t + 1]):
                p = key ^ flips[i]
                if width == 1:  # a constant divisor compiles to a multiply
                    blk = p // _BLOCK_DATA
                    lane = p - blk * _BLOCK_DATA
                elif width == 2:
                    blk = p // (_BLOCK_DATA // 2)
                    lane = p - blk * (_BLOCK_DATA // 2)
                else:
                    blk = p // per_block
                    lane = p - blk * per_block
                probe_blk[np_] = first + blk
                probe_lane[np_] = lane
                np_ += 1
        for i in range(np_, np_ + _AHEAD):
            probe_blk[i] = 0
        # Phase 2: where each non-empty bucket's entries start (two lanes of its directory
        # line: see ``BLOCK``), and how far its sketches may be from the query's: ``r`` less
        # the bits the probe flipped (the distance on the table's own substring).
        nb = 0
        for t in range(m):
            width = widths[t]
            for i in range(flip_start[t], flip_start[t + 1]):
                _prefetch1(dir8, probe_blk[i + _AHEAD] * BLOCK)
                start, c = _bucket(dir8, dir32, dir64, probe_blk[i], probe_lane[i], width)
                lo[nb] = t * stride + 2 * start
                size[nb] = c
                room[nb] = r - np.int64(_popcount(np.uint64(flips[i])))
                table[nb] = t
                nb += c > 0
        for i in range(nb, nb + _AHEAD):
            lo[i] = 0
            size[i] = 0
        # Phase 3: the buckets' sketches, in order; the few candidates left are verified.
        nf = _sift(flat, lo, size, room, table, nb, qa, qb, found)
        if nf > found.shape[0]:
            found = np.empty(2 * nf, dtype=np.int64)
            nf = _sift(flat, lo, size, room, table, nb, qa, qb, found)
        # Phase 4: their distances; drop those an earlier table also finds.
        c = 0
        for i in range(nf):
            p = found[i] >> 8
            t = found[i] & 0xFF
            d = 0
            for w in range(nw):
                xor[w] = codes[p, w] ^ q[w]
                d += _popcount(xor[w])
            if d > r or not alive[p]:
                continue
            dup = False
            for u in range(t):
                if radii[u] >= 0 and _popcount(_extract(xor, starts[u], lengths[u])) <= radii[u]:
                    dup = True
                    break
            if dup:
                continue
            if c < cap:
                out_pos[qi, c] = p
                out_dist[qi, c] = d
            c += 1
        counts[qi] = c


@numba.njit(nogil=True, cache=True)
def _sift(flat, lo, size, room, table, nb, qa, qb, found):  # type: ignore[no-untyped-def]
    """Scan the ``nb`` buckets at ``lo`` (``size`` entries each) and write to ``found``
    (``row << 8 | table``) every entry whose sketch is within its bucket's ``room`` of the
    query's. Returns how many there are; if more than ``found`` holds, call again with room
    for them all. (Its own function: inlined into ``mih_search``, this loop ran 3x slower.)"""
    nf = 0
    for i in range(nb):
        ahead = lo[i + _AHEAD]
        for k in range(0, 2 * size[i + _AHEAD], 8):
            _prefetch1(flat, ahead + k)
        t = table[i]
        a = qa[t]
        b = qb[t]
        at = lo[i]
        most = room[i]
        for k in range(size[i]):
            x = flat[at + 2 * k + 1]
            d = np.int64(_popcount(flat[at + 2 * k] ^ a)) + np.int64(
                _popcount((x ^ b) >> np.uint64(32))
            )
            if d <= most:
                if nf < found.shape[0]:
                    found[nf] = (np.int64(x & _ROW) << 8) | t
                nf += 1
    return nf


# Bins of a batch's probes per table: 2**12 slices of the table's keys, each small enough that
# its directory lines and entries are read close together (measured best of 2**4, 2**8, 2**12).
_BIN_BITS = 12


@numba.njit(nogil=True, cache=True)
def mih_search_batch(  # type: ignore[no-untyped-def]
    codes, alive, starts, lengths, sk_at, sk_len, dir_base, widths, dir8, dir32, dir64, entries,
    radii, flips, flip_start, queries, r, out_pos, out_dist, counts,
):  # fmt: skip
    """``mih_search`` for a batch of queries, table by table in key order: the same results.

    Per table, every probe of every query is sorted by key (a counting sort on the key's top
    ``_BIN_BITS`` bits), so the table's directory and entries are read from one end to the
    other instead of at random: at 2,000 query codes against 1M, about 40% of a 16-bit table's
    buckets are read, nearly a sequential scan; at 400, fewer and farther apart, still in
    address order. Found candidates of all tables are verified at the end. The caller keeps
    ``len(queries) * (most probes of one table)`` under 2**31 and ``len(queries)`` under 2**16
    (``batch_rows``).
    """
    m = starts.shape[0]
    nq = queries.shape[0]
    nw = queries.shape[1]
    bits = nw * 64
    cap = out_pos.shape[1]
    stride = entries.shape[1]
    flat = entries.reshape(-1)
    most = 0
    for t in range(m):
        most = max(most, flip_start[t + 1] - flip_start[t])
    keys = np.empty(nq * most, dtype=np.int64)
    lo = np.empty(nq * most + _AHEAD, dtype=np.int64)
    size = np.empty(nq * most + _AHEAD, dtype=np.int64)
    room = np.empty(nq * most, dtype=np.int64)
    who = np.empty(nq * most, dtype=np.int64)
    qkey = np.empty(nq, dtype=np.int64)
    qa = np.empty(nq, dtype=np.uint64)
    qb = np.empty(nq, dtype=np.uint64)
    found = np.empty(nq * 8 + 64, dtype=np.int64)
    nf = 0
    counts[:] = 0
    for t in range(m):
        f0 = flip_start[t]
        nfl = flip_start[t + 1] - f0
        if nfl == 0:
            continue
        length = lengths[t]
        shift = max(length - _BIN_BITS, 0)
        bins = ((np.int64(1) << length) >> shift) + 1
        fill = np.zeros(bins + 1, dtype=np.int64)
        for qi in range(nq):
            qkey[qi] = np.int64(_extract(queries[qi], starts[t], length))
            qa[qi], qb[qi] = _sketch(queries[qi], sk_at[t], sk_len[t], bits)
            for i in range(nfl):
                fill[((qkey[qi] ^ flips[f0 + i]) >> shift) + 1] += 1
        for b in range(bins):
            fill[b + 1] += fill[b]
        for qi in range(nq):
            for i in range(nfl):
                p = qkey[qi] ^ flips[f0 + i]
                b = p >> shift
                keys[fill[b]] = (p << 32) | (qi * nfl + i)
                fill[b] += 1
        width = widths[t]
        per_block = _BLOCK_DATA // width
        first = dir_base[t]
        nb = 0
        for j in range(nq * nfl):
            p = keys[j] >> 32
            if width == 1:  # constant divisors compile to a multiply
                blk = p // _BLOCK_DATA
                lane = p - blk * _BLOCK_DATA
            elif width == 2:
                blk = p // (_BLOCK_DATA // 2)
                lane = p - blk * (_BLOCK_DATA // 2)
            else:
                blk = p // per_block
                lane = p - blk * per_block
            start, c = _bucket(dir8, dir32, dir64, first + blk, lane, width)
            which = keys[j] & 0xFFFFFFFF
            qi = which // nfl
            lo[nb] = t * stride + 2 * start
            size[nb] = c
            room[nb] = r - np.int64(_popcount(np.uint64(flips[f0 + which - qi * nfl])))
            who[nb] = qi
            nb += c > 0
        for i in range(nb, nb + _AHEAD):
            lo[i] = 0
            size[i] = 0
        got = _sift_batch(flat, lo, size, room, who, nb, qa, qb, t, found, nf)
        if got > found.shape[0]:
            bigger = np.empty(2 * got, dtype=np.int64)
            bigger[:nf] = found[:nf]
            found = bigger
            got = _sift_batch(flat, lo, size, room, who, nb, qa, qb, t, found, nf)
        nf = got
    xor = np.empty(nw, dtype=np.uint64)
    for i in range(nf):
        p = found[i] >> 24
        t = (found[i] >> 16) & 0xFF
        qi = found[i] & 0xFFFF
        d = 0
        for w in range(nw):
            xor[w] = codes[p, w] ^ queries[qi, w]
            d += _popcount(xor[w])
        if d > r or not alive[p]:
            continue
        dup = False
        for u in range(t):
            if radii[u] >= 0 and _popcount(_extract(xor, starts[u], lengths[u])) <= radii[u]:
                dup = True
                break
        if dup:
            continue
        c = counts[qi]
        if c < cap:
            out_pos[qi, c] = p
            out_dist[qi, c] = d
        counts[qi] = c + 1


@numba.njit(nogil=True, cache=True)
def _sift_batch(flat, lo, size, room, who, nb, qa, qb, t, found, nf):  # type: ignore[no-untyped-def]
    """``_sift`` for ``mih_search_batch``: buckets of table ``t`` for query ``who[i]``; found
    entries are appended after ``nf`` as ``row << 24 | t << 16 | query``."""
    for i in range(nb):
        ahead = lo[i + _AHEAD]
        for k in range(0, 2 * size[i + _AHEAD], 8):
            _prefetch1(flat, ahead + k)
        qi = who[i]
        a = qa[qi]
        b = qb[qi]
        at = lo[i]
        most = room[i]
        for k in range(size[i]):
            x = flat[at + 2 * k + 1]
            d = np.int64(_popcount(flat[at + 2 * k] ^ a)) + np.int64(
                _popcount((x ^ b) >> np.uint64(32))
            )
            if d <= most:
                if nf < found.shape[0]:
                    found[nf] = (np.int64(x & _ROW) << 24) | (t << 16) | qi
                nf += 1
    return nf


def batch_rows(flip_start: np.ndarray) -> int:
    """Most queries one ``mih_search_batch`` call may take for a plan with these flips."""
    most = int(np.diff(flip_start).max(initial=1))
    return max(1, min(1 << 12, (2**31 - 1) // max(most, 1)))


@numba.njit(inline="always")
def _bucket(dir8, dir32, dir64, blk, lane, width):  # type: ignore[no-untyped-def]
    """(start in the row list, size) of the bucket at ``lane`` of directory block ``blk``."""
    start = np.int64(dir32[blk * (BLOCK // 4) + _BLOCK_DATA // 4])
    at = blk * BLOCK + lane * width
    upto = _lane(dir8, at, width)
    before = _lane(dir8, at - width, width) if lane > 0 else np.int64(0)
    return start + before, upto - before


@numba.njit(nogil=True, cache=True)
def scrub(codes, rows, starts, lengths, dir_base, widths, dir8, dir32, dir64, entries, dummy):  # type: ignore[no-untyped-def]
    """Erase removed ``rows``: their codes become zeros and their entries in the tables point
    at ``dummy`` (a dead, zero row) with a zero sketch, so that neither the codes nor the tables
    (a row's bucket in each table and its sketch are bits of its code) keep a withdrawn hash.

    Call only after the rows are marked dead: a search running meanwhile reads either the old
    or the new values, and drops the row either way.
    """
    m = starts.shape[0]
    for row in rows:
        for t in range(m):
            width = widths[t]
            per_block = _BLOCK_DATA // width
            key = np.int64(_extract(codes[row], starts[t], lengths[t]))
            blk = key // per_block
            start, size = _bucket(
                dir8, dir32, dir64, dir_base[t] + blk, key - blk * per_block, width
            )
            for j in range(start, start + size):
                if np.int64(entries[t, 2 * j + 1] & _ROW) == row:
                    entries[t, 2 * j + 1] = np.uint64(dummy)
                    entries[t, 2 * j] = 0
                    break
    for row in rows:
        codes[row, :] = 0


@numba.njit(inline="always")
def _lane(dir8, at, width):  # type: ignore[no-untyped-def]
    v = np.int64(0)
    for b in range(width):
        v |= np.int64(dir8[at + b]) << (8 * b)
    return v


def split(bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``bits`` into ``m`` consecutive substrings, the longer ones first."""
    lengths = np.array([bits // m + (1 if i < bits % m else 0) for i in range(m)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, lengths


# Relative costs per probe, in random cache-line reads (what a search waits for): the directory
# line (cheap while a table's directory stays in cache, up to about 2 MB; dearer than a plain
# miss beyond, as batches then sort millions of probes over it: at 10M codes, 23-bit tables
# were 1.7x slower per batched query than 18-bit ones, measured), the first line of a
# non-empty bucket, each further line of it (read in order, prefetched: about half a random
# read, measured), and a code read for each candidate whose sketch does not rule it out.
_SMALL_DIRECTORY = 2 << 20
_DIRECTORY_COST = 0.3
_BIG_DIRECTORY_COST = 1.5
_BUCKET_COST = 1.0
_LINE_COST = 0.55
_CODE_COST = 1.0
_ENTRY_BYTES = 16


def _passing(sketch_bits: int, room: int) -> float:
    """Share of unrelated codes (uniform bits) whose sketch is within ``room`` of a query's."""
    return sum(comb(sketch_bits, k) for k in range(max(-1, room) + 1)) / 2.0**sketch_bits


def _probe_cost(length: int, n: int, bits: int = 256, r: int = 31) -> float:
    per_bucket = n / 2.0**length
    passing = _passing(min(SKETCH_BITS, bits - length), r)
    small = directory_blocks(length, 1) * BLOCK <= _SMALL_DIRECTORY
    return (
        (_DIRECTORY_COST if small else _BIG_DIRECTORY_COST)
        + _BUCKET_COST * -np.expm1(-per_bucket)
        + _LINE_COST * per_bucket * _ENTRY_BYTES / BLOCK
        + _CODE_COST * per_bucket * passing
    )


def radii_for(lengths: np.ndarray, r: int, n: int) -> np.ndarray:
    """Probe radii with ``sum(t_i + 1) == r + 1`` (exact, see above) at the lowest cost.

    Raising a table's radius from ``t`` to ``t + 1`` adds ``C(L, t+1)`` probes, each costing
    about the same on uniform codes; those increments grow with ``t``, so taking the cheapest
    one ``r + 1`` times gives the cheapest plan.
    """
    radii = np.full(len(lengths), -1, dtype=np.int64)
    bits = int(np.sum(lengths))
    for _ in range(r + 1):
        # A radius of L already probes every key of an L-bit table: never go past it.
        costs = [
            comb(int(length), int(radii[i]) + 1) * _probe_cost(int(length), n, bits, r)
            if radii[i] < length
            else float("inf")
            for i, length in enumerate(lengths)
        ]
        radii[int(np.argmin(costs))] += 1
    return radii


def flip_masks(lengths: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every mask of at most ``radii[t]`` set bits among ``lengths[t]``, for each table,
    back to back, and where each table's masks start (``m + 1`` bounds)."""
    masks: list[int] = []
    bounds = [0]
    for length, radius in zip(lengths.tolist(), radii.tolist(), strict=True):
        for k in range(radius + 1):
            masks.extend(sum(1 << b for b in bits) for bits in combinations(range(length), k))
        bounds.append(len(masks))
    return np.array(masks, dtype=np.int64), np.array(bounds, dtype=np.int64)


def plan_cost(lengths: np.ndarray, r: int, n: int) -> float:
    """Expected cost per query on uniform codes for a split and radius (arbitrary units)."""
    radii = radii_for(lengths, r, n)
    bits = int(np.sum(lengths))
    total = 0.0
    for length, t in zip(lengths.tolist(), radii.tolist(), strict=True):
        probes = sum(comb(length, k) for k in range(t + 1))
        total += probes * _probe_cost(length, n, bits, r)
    return total


def table_bytes(lengths: np.ndarray, n: int) -> int:
    """Memory of a segment's tables on uniform codes: entries plus directories."""
    blocks = sum(directory_blocks(int(length), 1) for length in lengths)
    return _ENTRY_BYTES * len(lengths) * n + BLOCK * blocks


def choose_split(bits: int, max_distance: int, n: int) -> int:
    """Number of substrings for a segment of ``n`` codes searched up to ``max_distance``.

    The cheapest split whose tables fit in 256 bytes per code (plus 32 MB, so small segments
    may use longer substrings). For PDQ at distance 31 that is 16 tables of 16 bits at 1M codes
    (256 MB of entries beside 40 MB of codes and ids) and 13 of 19-20 bits at 10M (2.1 GB beside
    400 MB): the sketches cost memory (16 bytes per entry where a bare row number took 4), and
    buy a search about 2x cheaper at 1M (see the module docstring).
    """
    budget = 256 * n + (32 << 20)
    best_m, best_cost = bits // 8, float("inf")
    for m in range(max(1, -(-bits // MAX_SUBSTRING_BITS)), bits // 4 + 1):
        _, lengths = split(bits, m)
        if int(lengths.max()) > MAX_SUBSTRING_BITS or table_bytes(lengths, n) > budget:
            continue
        cost = plan_cost(lengths, max_distance, n)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m
