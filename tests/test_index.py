"""The index against a brute-force reference: every stored code within the distance, no more.

The threshold boundary is where bugs live, so hashes sit at exact distances 0, 1, 30, 31, 32 and
60 from a base hash; random banks, removals, re-adds and compaction are checked against a plain
popcount over every live code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.errors import InvalidDistance, InvalidHash
from matcher.index import ExactIndex, HammingIndex, Index, codes_of, one_thread
from matcher.signals import MD5, PDQ, PHASH, SHA256, Hash, SignalType

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def reference(
    entries: dict[int, bytes], query: np.ndarray, max_distance: int
) -> list[tuple[int, int]]:
    """Every (id, distance) within max_distance, best first, by plain popcount."""
    if not entries:
        return []
    ids = np.fromiter(entries, dtype=np.int64)
    codes = np.frombuffer(b"".join(entries.values()), dtype=np.uint8).reshape(len(ids), -1)
    d = _POP8[codes ^ query].sum(axis=1)
    hit = d <= max_distance
    return sorted(zip(d[hit].tolist(), ids[hit].tolist(), strict=True))


def as_pairs(result: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    ids, dists = result
    assert ids.dtype == np.int64
    assert len(ids) == len(dists)
    return list(zip(dists.tolist(), ids.tolist(), strict=True))


def flip(code: np.ndarray, bits: list[int]) -> np.ndarray:
    """A copy of ``code`` with the given bit positions flipped."""
    out = code.copy()
    for b in bits:
        out[b // 8] ^= np.uint8(1 << (7 - b % 8))
    return out


def at_distance(rng: np.random.Generator, code: np.ndarray, distance: int) -> np.ndarray:
    bits = rng.choice(len(code) * 8, size=distance, replace=False)
    return flip(code, [int(b) for b in bits])


# Small banks are searched by a flat scan by default; ``flat_below=0`` forces the multi-index
# tables so that the same properties check both paths.
PATHS = [pytest.param({}, id="default"), pytest.param({"flat_below": 0}, id="multi-index")]


def make_index(signal: SignalType, options: dict) -> HammingIndex:
    return HammingIndex(signal, **options)


@pytest.mark.parametrize("options", PATHS)
@pytest.mark.parametrize("seed", range(5))
def test_boundary_distances(options: dict, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, PDQ.byte_length, dtype=np.uint8)
    distances = [0, 1, 30, 31, 32, 60]
    codes = np.stack([at_distance(rng, base, d) for d in distances])
    index = make_index(PDQ, options)
    index.add(np.arange(len(codes), dtype=np.int64) + 100, codes)
    (found,) = index.search(base[None, :], 31)
    assert as_pairs(found) == [(0, 100), (1, 101), (30, 102), (31, 103)]
    (found,) = index.search(base[None, :], 30)
    assert as_pairs(found) == [(0, 100), (1, 101), (30, 102)]
    (found,) = index.search(base[None, :], 0)
    assert as_pairs(found) == [(0, 100)]


@pytest.mark.parametrize("options", PATHS)
def test_empty_index(options: dict) -> None:
    index = make_index(PDQ, options)
    assert len(index) == 0
    results = index.search(np.zeros((3, 32), dtype=np.uint8), 31)
    assert [as_pairs(r) for r in results] == [[], [], []]
    assert index.search(np.zeros((0, 32), dtype=np.uint8), 31) == []


@pytest.mark.parametrize("options", PATHS)
def test_one_hash(options: dict) -> None:
    # A peer's index returned nothing from a bank of exactly one hash.
    index = make_index(PDQ, options)
    code = np.full((1, 32), 0xA5, dtype=np.uint8)
    index.add(np.array([7]), code)
    assert len(index) == 1
    (found,) = index.search(code, 31)
    assert as_pairs(found) == [(0, 7)]
    (found,) = index.search(flip(code[0], list(range(31)))[None, :], 31)
    assert as_pairs(found) == [(31, 7)]


@pytest.mark.parametrize("options", PATHS)
def test_duplicate_codes(options: dict) -> None:
    index = make_index(PDQ, options)
    code = np.arange(32, dtype=np.uint8)
    index.add(np.array([3, 1, 2]), np.stack([code, code, code]))
    (found,) = index.search(code[None, :], 31)
    assert as_pairs(found) == [(0, 1), (0, 2), (0, 3)]


@pytest.mark.parametrize("options", PATHS)
def test_many_matches_for_one_query(options: dict) -> None:
    # More matches than any per-query buffer a kernel might start with.
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = np.stack([at_distance(rng, base, int(d)) for d in rng.integers(0, 40, 3000)])
    index = make_index(PDQ, options)
    index.add(np.arange(3000), codes)
    entries = {i: codes[i].tobytes() for i in range(3000)}
    (found,) = index.search(base[None, :], 31)
    assert as_pairs(found) == reference(entries, base, 31)


@pytest.mark.parametrize("options", PATHS)
def test_phash_uses_its_own_maximum(options: dict) -> None:
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, PHASH.byte_length, dtype=np.uint8)
    distances = [0, 1, 8, 10, 11, 20]
    codes = np.stack([at_distance(rng, base, d) for d in distances])
    index = make_index(PHASH, options)
    index.add(np.arange(len(codes)), codes)
    (found,) = index.search(base[None, :], 10)
    assert as_pairs(found) == [(0, 0), (1, 1), (8, 2), (10, 3)]
    (found,) = index.search(base[None, :], None)  # the default, 8
    assert as_pairs(found) == [(0, 0), (1, 1), (8, 2)]
    with pytest.raises(InvalidDistance):
        index.search(base[None, :], 11)


@pytest.mark.parametrize("distance", [32, 64, 256, -1])
def test_distance_above_maximum_is_refused(distance: int) -> None:
    index = HammingIndex(PDQ)
    index.add(np.array([1]), np.zeros((1, 32), dtype=np.uint8))
    with pytest.raises(InvalidDistance) as err:
        index.search(np.zeros((1, 32), dtype=np.uint8), distance)
    assert err.value.field == "max_distance"


def test_bad_codes_are_refused() -> None:
    index = HammingIndex(PDQ)
    with pytest.raises(InvalidHash):
        index.add(np.array([1]), np.zeros((1, 8), dtype=np.uint8))
    with pytest.raises(InvalidHash):
        index.search(np.zeros((1, 32), dtype=np.int64), 31)
    with pytest.raises(ValueError):
        index.add(np.array([1, 2]), np.zeros((1, 32), dtype=np.uint8))
    with pytest.raises(ValueError):
        index.add(np.array([1, 1]), np.zeros((2, 32), dtype=np.uint8))
    with pytest.raises(ValueError):
        HammingIndex(MD5)
    with pytest.raises(ValueError):
        ExactIndex(PDQ)


@pytest.mark.parametrize("options", PATHS)
def test_remove_then_query_then_add_then_compact(options: dict) -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    codes = np.stack([at_distance(rng, base, d) for d in range(0, 40, 2)])
    index = make_index(PDQ, options)
    index.add(np.arange(20), codes)
    entries = {i: codes[i].tobytes() for i in range(20)}

    def check() -> None:
        (found,) = index.search(base[None, :], 31)
        assert as_pairs(found) == reference(entries, base, 31)
        assert len(index) == len(entries)

    assert index.remove([0, 5, 999]) == 2
    del entries[0], entries[5]
    check()
    assert index.remove([0]) == 0
    index.add(np.array([0, 100]), np.stack([codes[1], base]))
    entries[0], entries[100] = codes[1].tobytes(), base.tobytes()
    check()
    index.add(np.array([100]), codes[15][None, :])  # re-adding an id replaces its code
    entries[100] = codes[15].tobytes()
    check()
    index.compact()
    check()
    index.remove(list(range(200)))
    entries.clear()
    check()
    index.compact()
    check()


def clustered_codes(rng: np.random.Generator, n: int, nbytes: int, spread: int) -> np.ndarray:
    """Codes around a few centres, so that a search at the threshold finds real matches."""
    centres = rng.integers(0, 256, (4, nbytes), dtype=np.uint8)
    out = np.empty((n, nbytes), dtype=np.uint8)
    for i in range(n):
        out[i] = at_distance(rng, centres[rng.integers(0, 4)], int(rng.integers(0, spread)))
    return out


operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "compact", "search"]),
        st.integers(0, 2**32 - 1),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=operations,
    signal=st.sampled_from([PDQ, PHASH]),
    # 0: every segment has tables; 40: small adds gather in a flat tail that turns into table
    # segments, which merge; a billion: everything flat.
    flat_below=st.sampled_from([0, 40, 10**9]),
)
def test_operations_match_reference(
    ops: list[tuple[str, int]], signal: SignalType, flat_below: int
) -> None:
    index = make_index(signal, {"flat_below": flat_below})
    entries: dict[int, bytes] = {}
    spread = signal.max_distance * 2 + 4
    for op, seed in ops:
        rng = np.random.default_rng(seed)
        if op == "add":
            n = int(rng.integers(1, 60 if rng.random() < 0.8 else 120))
            ids = rng.choice(120, size=n, replace=False).astype(np.int64)
            codes = clustered_codes(rng, n, signal.byte_length, spread)
            index.add(ids, codes)
            entries.update({int(i): c.tobytes() for i, c in zip(ids, codes, strict=True)})
        elif op == "remove":
            ids = rng.choice(120, size=int(rng.integers(1, 60)), replace=False).tolist()
            expected = sum(1 for i in ids if i in entries)
            assert index.remove(ids) == expected
            for i in ids:
                entries.pop(i, None)
        elif op == "compact":
            index.compact()
        queries = np.concatenate(
            [
                clustered_codes(rng, 3, signal.byte_length, spread),
                np.frombuffer(b"".join(list(entries.values())[:2]), dtype=np.uint8).reshape(
                    -1, signal.byte_length
                ),
            ]
        )
        max_distance = int(rng.integers(0, signal.max_distance + 1))
        results = index.search(queries, max_distance)
        assert len(results) == len(queries)
        for q, result in zip(queries, results, strict=True):
            assert as_pairs(result) == reference(entries, q, max_distance)
        assert len(index) == len(entries)


@pytest.mark.parametrize("options", PATHS)
def test_larger_random_bank_with_planted_neighbours(options: dict) -> None:
    rng = np.random.default_rng(4)
    n = 40_000
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    planted = np.stack([at_distance(rng, q, int(d)) for q in queries for d in (0, 15, 31, 32)])
    all_codes = np.concatenate([codes, planted])
    ids = rng.permutation(len(all_codes)).astype(np.int64) * 3
    index = make_index(PDQ, options)
    index.add(ids[:n], all_codes[:n])
    index.add(ids[n:], all_codes[n:])
    entries = {int(i): c.tobytes() for i, c in zip(ids, all_codes, strict=True)}
    for max_distance in (31, 20):
        results = index.search(queries, max_distance)
        for q, result in zip(queries, results, strict=True):
            assert as_pairs(result) == reference(entries, q, max_distance)
    # every planted neighbour within 31 found: 0, 15 and 31 bits away
    assert sum(len(r[0]) for r in index.search(queries, 31)) >= 150


@pytest.mark.parametrize("signal", [MD5, SHA256])
def test_exact_index(signal: SignalType) -> None:
    index = ExactIndex(signal)
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (3, signal.byte_length), dtype=np.uint8)
    index.add(np.array([1, 2, 3]), np.stack([codes[0], codes[1], codes[0]]))
    assert len(index) == 3
    found = index.search(codes, 0)
    assert [as_pairs(r) for r in found] == [[(0, 1), (0, 3)], [(0, 2)], []]
    assert index.remove([1, 42]) == 1
    assert as_pairs(index.search(codes[:1], None)[0]) == [(0, 3)]
    with pytest.raises(InvalidDistance):
        index.search(codes, 1)


def test_index_facade_routes_by_signal() -> None:
    rng = np.random.default_rng(6)
    pdq = Hash(PDQ, rng.integers(0, 256, 32, dtype=np.uint8).tobytes())
    near = Hash(PDQ, flip(np.frombuffer(pdq.value, dtype=np.uint8), [3, 200]).tobytes())
    ph = Hash(PHASH, bytes(8))
    md5 = Hash(MD5, bytes(range(16)))
    index = Index()
    index.add([10, 11, 12, 13], [pdq, ph, md5, near])
    assert len(index) == 4
    assert index.size(PDQ) == 2 and index.size(PHASH) == 1 and index.size(SHA256) == 0
    q = np.frombuffer(pdq.value, dtype=np.uint8)[None, :]
    assert as_pairs(index.search(PDQ, q, 31)[0]) == [(0, 10), (2, 13)]
    assert as_pairs(index.search(PHASH, np.zeros((1, 8), np.uint8))[0]) == [(0, 11)]
    md5_q = np.frombuffer(md5.value, dtype=np.uint8)[None, :]
    assert as_pairs(index.search(MD5, md5_q)[0]) == [(0, 12)]
    assert index.remove([10, 12]) == 2
    assert as_pairs(index.search(PDQ, q, 31)[0]) == [(2, 13)]
    assert as_pairs(index.search(MD5, md5_q)[0]) == []
    with pytest.raises(InvalidDistance):
        index.search(PDQ, q, 32)
    index.compact()
    assert len(index) == 2
    index.add_batches(PHASH, [(np.array([20]), np.full((1, 8), 255, np.uint8))])
    assert index.size(PHASH) == 2
    assert codes_of([pdq, near]).shape == (2, 32)
    with pytest.raises(ValueError):
        codes_of([pdq, ph])


def test_add_batches_and_unaligned_codes() -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (30_000, 32), dtype=np.uint8)
    index = HammingIndex(PDQ)
    index.add_batches(
        (np.arange(i, i + 10_000), codes[i : i + 10_000]) for i in (0, 10_000, 20_000)
    )
    assert len(index) == 30_000
    assert len(index._segments) == 1  # one build, no merges
    # A query parsed from bytes may sit at an odd address: still found.
    raw = b"\0" + codes[123].tobytes()
    query = np.frombuffer(raw, dtype=np.uint8)[1:].reshape(1, 32)
    (found,) = index.search(query, 0)
    assert as_pairs(found) == [(0, 123)]


def test_searches_run_alongside_mutations() -> None:
    """Entries that are never removed are found by every search while others come and go."""
    rng = np.random.default_rng(8)
    stable = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    index = HammingIndex(PDQ, flat_below=500, threads=2)
    index.add(np.arange(200), stable)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            next_id = 1_000
            while not stop.is_set():
                n = int(rng.integers(1, 400))
                index.add(np.arange(next_id, next_id + n), rng.integers(0, 256, (n, 32), np.uint8))
                index.remove(range(next_id, next_id + n // 2))
                next_id += n
                if next_id % 7 == 0:
                    index.compact()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(200):
            results = index.search(stable, 0)
            assert [r[0][:1].tolist() for r in results] == [[i] for i in range(200)]
    finally:
        stop.set()
        worker.join()
    assert not errors


@pytest.mark.parametrize("copies", [300, 70_000])
def test_huge_buckets(copies: int) -> None:
    """Many identical codes overflow one-byte (and two-byte) bucket sizes: still exact."""
    rng = np.random.default_rng(9)
    base = rng.integers(0, 256, 32, dtype=np.uint8)
    others = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    codes = np.concatenate([np.repeat(base[None, :], copies, axis=0), others])
    index = HammingIndex(PDQ, flat_below=0)
    index.add(np.arange(len(codes)), codes)
    (segment,) = index._segments
    assert segment.tables is not None
    assert segment.tables.widths.max() == (2 if copies < 65536 else 4)
    entries = {i: c.tobytes() for i, c in enumerate(codes)}
    queries = np.stack([base, flip(base, [1, 100, 200]), others[0]])
    for q, result in zip(queries, index.search(queries, 31), strict=True):
        assert as_pairs(result) == reference(entries, q, 31)


DATA = Path(
    os.environ.get(
        "MATCHER_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)
REG_TEST = DATA / "pdq" / "threatexchange-pdq" / "reg-test-input"


def read_pdq_list(path: Path) -> np.ndarray:
    rows = [bytes.fromhex(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 32)


@pytest.mark.parametrize("options", PATHS)
def test_meta_haystack_and_needles(options: dict) -> None:
    """Meta's PDQ index test lists: real hashes, correlated bits, near-duplicate families."""
    if not (REG_TEST / "haystack.txt").exists():
        pytest.skip(f"PDQ test lists not found under {REG_TEST} (set MATCHER_TEST_DATA)")
    haystack = read_pdq_list(REG_TEST / "haystack.txt")
    needles = read_pdq_list(REG_TEST / "needles.txt")
    index = make_index(PDQ, options)
    index.add(np.arange(len(haystack)), haystack)
    entries = {i: c.tobytes() for i, c in enumerate(haystack)}
    queries = np.concatenate([needles, haystack[::10]])
    for max_distance in (31, 12):
        results = index.search(queries, max_distance)
        for q, result in zip(queries, results, strict=True):
            assert as_pairs(result) == reference(entries, q, max_distance)


@pytest.mark.parametrize("options", PATHS)
def test_removal_erases_the_hash_values(options: dict) -> None:
    """Withdrawal is real (rule 3 of DESIGN.md): a removed code is wiped from the index's
    memory at once, from the stored rows and from the tables, not only hidden."""
    rng = np.random.default_rng(10)
    codes = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    index = make_index(PDQ, options)
    index.add(np.arange(1000), codes)
    removed = np.arange(0, 1000, 7)
    index.remove(removed)
    (segment,) = index._segments
    rows = np.searchsorted(segment.ids, removed)
    assert not segment.words[rows].any()
    if segment.tables is not None:
        # Table entries: no row number of a removed entry, and the entries that pointed at
        # one point at the dead row with their sketch (bits of the code) zeroed.
        entries = segment.tables.entries
        pointed = entries[:, 1::2] & np.uint64(0xFFFFFFFF)
        assert not np.isin(pointed, rows).any()
        dead = pointed == len(segment)
        assert dead.sum() == len(removed) * segment.tables.m
        assert not entries[:, 0::2][dead].any()
        assert not (entries[:, 1::2][dead] >> np.uint64(32)).any()
    results = index.search(codes, 31)
    found = {int(i) for ids, _ in results for i in ids}
    assert found == set(range(1000)) - set(removed.tolist())


@pytest.mark.parametrize("flat_below", [0, 64])
def test_compaction_alongside_adds_and_removes(flat_below: int) -> None:
    """compact() builds outside the lock: what changes meanwhile is neither lost nor revived."""
    rng = np.random.default_rng(11)
    index = HammingIndex(PDQ, flat_below=flat_below, threads=1)
    entries: dict[int, bytes] = {}
    codes = clustered_codes(rng, 3000, 32, 40)
    index.add(np.arange(3000), codes)
    entries.update({i: c.tobytes() for i, c in enumerate(codes)})
    done = threading.Event()
    errors: list[BaseException] = []

    def compactor() -> None:
        try:
            while not done.is_set():
                index.compact()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    worker = threading.Thread(target=compactor)
    worker.start()
    try:
        for step in range(100):
            if step % 3 == 0:  # new ids, some replacing existing ones
                ids = rng.choice(6000, size=int(rng.integers(1, 200)), replace=False)
                new = clustered_codes(rng, len(ids), 32, 40)
                index.add(ids, new)
                entries.update({int(i): c.tobytes() for i, c in zip(ids, new, strict=True)})
            else:
                ids = rng.choice(6000, size=int(rng.integers(1, 100)), replace=False).tolist()
                assert index.remove(ids) == sum(1 for i in ids if i in entries)
                for i in ids:
                    entries.pop(i, None)
            assert len(index) == len(entries)
            if step % 10 == 0:
                q = np.frombuffer(entries[next(iter(entries))], dtype=np.uint8)
                assert as_pairs(index.search(q[None, :], 31)[0]) == reference(entries, q, 31)
    finally:
        done.set()
        worker.join()
    assert not errors
    index.compact()
    queries = clustered_codes(rng, 40, 32, 40)
    for q, result in zip(queries, index.search(queries, 31), strict=True):
        assert as_pairs(result) == reference(entries, q, 31)
    assert len(index) == len(entries)


def test_large_rebuild_after_removals_runs_in_the_background() -> None:
    rng = np.random.default_rng(12)
    codes = rng.integers(0, 256, (4000, 32), dtype=np.uint8)
    index = HammingIndex(PDQ, flat_below=0)
    index.rebuild_inline_below = 1000  # this segment counts as large
    index.add(np.arange(4000), codes)
    (before,) = index._segments
    assert index.remove(range(1500)) == 1500  # over a quarter dead
    for _ in range(200):  # the background compaction swaps in a segment without them
        if index._segments and index._segments[0] is not before:
            break
        time.sleep(0.05)
    (after,) = index._segments
    assert after is not before and len(after) == 2500 == len(index)
    (found,) = index.search(codes[3999:], 0)
    assert as_pairs(found) == [(0, 3999)]


def test_an_index_compiles_nothing_until_warm_up_is_called() -> None:
    """Kernel compilation is an explicit step (``warm_up``): building an ``Index`` does not
    pay for it, so tools that never search start fast."""
    script = (
        "import matcher.index as m\n"
        "m.Index()\n"
        "assert not m._warm, 'Index() compiled the kernels'\n"
        "m.warm_up()\n"
        "assert m._warm\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_real_enroll_and_query_views_against_brute_force() -> None:
    """Rule 5 on the workload the service sees: the shipped ``enroll`` profile's views of real
    photos stored (correlated hashes: crops, rotations, turns of one picture), the ``query``
    profile's views of edited copies searched, in one batch and one upload at a time (the
    shapes the match dispatcher sends), through the multi-index tables."""
    from PIL import Image, ImageOps

    from matcher.hashing import enroll_views, query_views

    photos = sorted((DATA / "photos" / "clothing").glob("*.jpg"))[:6]
    if not photos:
        pytest.skip(f"photos not found under {DATA} (set MATCHER_TEST_DATA)")
    stored, uploads = [], []
    for k, path in enumerate(photos):
        with Image.open(path) as im:
            image = im.convert("RGB")
        stored += [h.value for _, h in enroll_views(image)]
        edited = image.crop((6, 0, image.width, image.height - 4)).resize(
            (image.width * 4 // 5, image.height * 4 // 5)
        )
        if k % 2:
            edited = ImageOps.mirror(edited)
        uploads.append(codes_of([h for _, h in query_views(edited)]))
    rng = np.random.default_rng(15)
    padding = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    codes = np.concatenate([np.frombuffer(b"".join(stored), np.uint8).reshape(-1, 32), padding])
    entries = {i: c.tobytes() for i, c in enumerate(codes)}
    index = HammingIndex(PDQ, flat_below=0)
    index.add(np.arange(len(codes)), codes)
    batch = np.concatenate(uploads)
    found = 0
    for results in (index.search(batch, 31), [r for u in uploads for r in index.search(u, 31)]):
        for q, result in zip(batch, results, strict=True):
            assert as_pairs(result) == reference(entries, q, 31)
            found += len(result[0])
    assert found > 0  # edited copies find their photos' views


def test_one_thread_keeps_a_batch_on_the_calling_thread() -> None:
    """Inside ``one_thread`` a large batch is searched on the caller's thread (the match
    dispatcher already keeps a search per core): same answers, no hand-off to the pool."""
    rng = np.random.default_rng(16)
    codes = clustered_codes(rng, 4000, 32, 40)
    queries = np.concatenate([codes[:100], rng.integers(0, 256, (100, 32), dtype=np.uint8)])
    index = HammingIndex(PDQ, flat_below=0, threads=2)
    index.add(np.arange(len(codes)), codes)
    assert index._pool._executor is not None  # the build used the index's threads
    index._pool._executor.shutdown()  # from now on a hand-off would raise
    with one_thread():
        got = index.search(queries, 31)
    with pytest.raises(RuntimeError):
        index.search(queries, 31)  # outside the block, the batch is split over the pool
    entries = {i: c.tobytes() for i, c in enumerate(codes)}
    assert [as_pairs(r) for r in got] == [reference(entries, q, 31) for q in queries]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    signal=st.sampled_from([PDQ, PHASH]),
    removed=st.floats(0, 0.3),
)
def test_batched_and_single_searches_match_brute_force(
    seed: int, n: int, signal: SignalType, removed: float
) -> None:
    """Both search kernels (one query at a time, and a batch table by table in key order, see
    ``mih_search_batch``) against brute force, on a bank with neighbours planted at the edges
    of every distance searched (0, 1, r - 1, r, r + 1 and far), some of them removed."""
    rng = np.random.default_rng(seed)
    nq = 120  # from _BATCH_FROM on, a batch is searched table by table
    queries = rng.integers(0, 256, (nq, signal.byte_length), dtype=np.uint8)
    top = signal.max_distance
    planted = [
        at_distance(rng, queries[int(rng.integers(nq))], d)
        for d in (0, 1, top - 1, top, top + 1, 2 * top - 2)
        for _ in range(4)
    ]
    codes = np.concatenate(
        [rng.integers(0, 256, (n, signal.byte_length), dtype=np.uint8), np.stack(planted)]
    )
    ids = rng.permutation(len(codes)).astype(np.int64) * 7
    index = make_index(signal, {"flat_below": 0})
    index.add(ids, codes)
    entries = {int(i): c.tobytes() for i, c in zip(ids, codes, strict=True)}
    gone = ids[rng.random(len(ids)) < removed]
    index.remove(gone)
    for i in gone.tolist():
        del entries[i]
    for max_distance in sorted({0, 1, top - 1, top, int(rng.integers(0, top + 1))}):
        batched = index.search(queries, max_distance)
        singles = [index.search(queries[k : k + 1], max_distance)[0] for k in range(0, nq, 7)]
        for q, result in zip(queries, batched, strict=True):
            assert as_pairs(result) == reference(entries, q, max_distance)
        for k, result in zip(range(0, nq, 7), singles, strict=True):
            assert as_pairs(result) == reference(entries, queries[k], max_distance)


def test_batches_larger_than_one_kernel_call() -> None:
    """A batch longer than one ``mih_search_batch`` call takes is cut into calls: same answers."""
    from matcher import _index_kernels as kernels

    rng = np.random.default_rng(17)
    codes = clustered_codes(rng, 500, 32, 40)
    index = HammingIndex(PDQ, flat_below=0, threads=1)
    index.add(np.arange(len(codes)), codes)
    (segment,) = index._segments
    assert segment.tables is not None
    step = kernels.batch_rows(segment.tables.plan(31)[2])
    queries = np.concatenate([codes, clustered_codes(rng, step + 100 - len(codes), 32, 40)])
    entries = {i: c.tobytes() for i, c in enumerate(codes)}
    results = index.search(queries, 31)
    assert [as_pairs(r) for r in results] == [reference(entries, q, 31) for q in queries]
    assert sum(len(r[0]) for r in results) >= len(codes)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    bits=st.sampled_from([64, 256]),
    at=st.integers(0, 255),
    length=st.integers(0, 96),
)
def test_a_sketch_holds_exactly_its_window_of_bits(
    seed: int, bits: int, at: int, length: int
) -> None:
    """Table entries carry a sketch: ``length`` bits of the code from bit ``at`` on, wrapping
    past the last bit (``_index_kernels._sketch``). The search drops a candidate when its
    sketch distance plus the probe's flips exceed the radius, which is exact only if the sketch
    distance counts exactly the differing bits inside that window: checked bit by bit here,
    with differences inside and outside the window, across the wrap."""
    from matcher import _index_kernels as kernels

    length = min(length, bits)
    at %= bits
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**63, bits // 64, dtype=np.int64).astype(np.uint64)
    window = [(at + i) % bits for i in range(length)]
    inside = rng.choice(window, int(rng.integers(0, length + 1)), replace=False) if window else []
    outside = [b for b in range(bits) if b not in set(window)]
    other = rng.choice(outside, int(rng.integers(0, len(outside) + 1)), replace=False)
    y = x.copy()
    for b in [*inside, *other]:
        y[int(b) // 64] ^= np.uint64(1) << np.uint64(int(b) % 64)
    xa, xb = kernels._sketch(x, at, length, bits)
    ya, yb = kernels._sketch(y, at, length, bits)
    assert int(xb) & 0xFFFFFFFF == 0  # the low half of the second word is the row number's
    assert bin(int(xa) ^ int(ya)).count("1") + bin((int(xb) ^ int(yb)) >> 32).count("1") == len(
        inside
    )
