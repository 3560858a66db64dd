"""Benchmark of the exact Hamming index against brute force and python-threatexchange.

For each size in ``MATCHER_BENCH_SIZES`` (default 1,000,000; the full run is
``MATCHER_BENCH_SIZES=1000000,10000000 make bench``): random PDQ hashes plus planted
near-duplicates at distances 0..40 of half the queries. Compared over the same data:

- ``matcher`` (``matcher.index.HammingIndex``, multi-index hashing),
- faiss ``IndexBinaryFlat.range_search``: exact brute force, and the ground truth for recall,
- python-threatexchange's ``PDQIndex`` (what Meta's HMA uses; single queries only, it has no
  batch query). Skip it with ``MATCHER_BENCH_THREATEXCHANGE=0`` (at 10M it takes minutes and
  several GB).

Then the same on real photographs' PDQ hashes (``MATCHER_TEST_DATA``/photos), whose bits are
correlated, to check that skewed buckets do not blow up the candidate count.

Writes ``bench/results/index.md`` (printed at the end of the run). Threads: 2 for every
batched search (``MATCHER_BENCH_THREADS``), with OpenMP waiting passively (see FACTS.md).
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from matcher import _index_kernels as K
from matcher.index import HammingIndex
from matcher.signals import PDQ

faiss = pytest.importorskip("faiss", reason="faiss-cpu is in the bench extra: make bench")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SIZES = [int(s) for s in os.environ.get("MATCHER_BENCH_SIZES", "1000000").split(",") if s]
THREADS = int(os.environ.get("MATCHER_BENCH_THREADS", "2"))
WITH_TE = os.environ.get("MATCHER_BENCH_THREATEXCHANGE", "1") != "0"
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
R = PDQ.max_distance
BATCH = 1000
SINGLES = 1000
PLANT_DISTANCES = (0, 1, 8, 16, 24, 30, 31, 32, 40)

ROWS: list[dict[str, str]] = []
NOTES: list[str] = []


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured(fn: Callable[[], object]) -> tuple[object, float, int]:
    """Run ``fn``; return its value, seconds taken and resident bytes gained."""
    gc.collect()
    before = rss()
    t = time.perf_counter()
    value = fn()
    took = time.perf_counter() - t
    gc.collect()
    return value, took, rss() - before


def latencies(fn: Callable[[int], object], n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t
    return out


def flip_bits(rng: np.random.Generator, code: np.ndarray, d: int) -> np.ndarray:
    bits = np.unpackbits(code)
    where = rng.choice(bits.size, size=d, replace=False)
    bits[where] ^= 1
    return np.packbits(bits)


def truth_sets(lims: np.ndarray, dist: np.ndarray, ids: np.ndarray) -> list[set[tuple[int, int]]]:
    return [
        set(
            zip(
                ids[lims[i] : lims[i + 1]].tolist(),
                dist[lims[i] : lims[i + 1]].tolist(),
                strict=True,
            )
        )
        for i in range(len(lims) - 1)
    ]


def recall(found: list[set[tuple[int, int]]], truth: list[set[tuple[int, int]]]) -> str:
    hits = sum(len(f & t) for f, t in zip(found, truth, strict=True))
    extra = sum(len(f - t) for f, t in zip(found, truth, strict=True))
    total = sum(len(t) for t in truth)
    text = f"{100.0 * hits / max(total, 1):.2f}% of {total}"
    return text + (f" (+{extra} wrong)" if extra else "")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def row(**cells: str) -> None:
    ROWS.append(cells)
    write_results()


def write_results() -> None:
    RESULTS.mkdir(exist_ok=True)
    cols = [
        "data",
        "index",
        "build s",
        "memory MB",
        "single p50 ms",
        "single p99 ms",
        "batch q/s",
        "x flat",
        "recall",
    ]
    lines = [
        "# Index benchmark",
        "",
        f"PDQ, radius {R}; batch of {BATCH} queries on {THREADS} threads; single queries one "
        "at a time on one thread. Memory is the resident-set growth while building. Recall "
        "against faiss IndexBinaryFlat (brute force); `wrong` counts results that are not in it.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(r.get(c, "") for c in cols) + " |" for r in ROWS]
    lines += ["", *NOTES, f"Load average at the end: {os.getloadavg()[0]:.2f}", ""]
    (RESULTS / "index.md").write_text("\n".join(lines))


def random_bank(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random PDQ codes with near-duplicates of half the queries planted; the queries."""
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, 256, (BATCH, 32), dtype=np.uint8)
    planted = np.stack(
        [flip_bits(rng, q, d) for q in queries[: BATCH // 2] for d in PLANT_DISTANCES]
    )
    bank = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    # spread the planted codes through the bank (ids are positions)
    bank[rng.choice(n, size=len(planted), replace=False)] = planted
    return bank, queries


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    faiss.omp_set_num_threads(THREADS)


def bench_matcher(
    benchmark: object, label: str, bank: np.ndarray, queries: np.ndarray, **options: int
) -> tuple[list[set[tuple[int, int]]], float]:
    ids = np.arange(len(bank), dtype=np.int64)
    warm = HammingIndex(PDQ, threads=THREADS)  # compile (or load cached) kernels first
    warm.add(ids[:10_000], bank[:10_000])
    warm.search(queries[:2], R)
    index, build, mem = measured(lambda: _built(ids, bank, options))
    assert isinstance(index, HammingIndex)
    single = latencies(lambda i: index.search(queries[i : i + 1], R), min(SINGLES, len(queries)))
    results = benchmark.pedantic(index.search, args=(queries, R), rounds=3, iterations=1)  # type: ignore[attr-defined]
    batch = min(benchmark.stats.stats.data)  # type: ignore[attr-defined]
    found = [set(zip(i.tolist(), d.tolist(), strict=True)) for i, d in results]
    row(
        data=label,
        index="matcher (multi-index)",
        **{
            "build s": f"{build:.1f}",
            "memory MB": f"{mem / 1e6:.0f} (arrays {index.nbytes / 1e6:.0f})",
            "single p50 ms": ms(float(np.median(single))),
            "single p99 ms": ms(float(np.percentile(single, 99))),
            "batch q/s": f"{len(queries) / batch:,.0f}",
        },
    )
    return found, len(queries) / batch


def _built(ids: np.ndarray, bank: np.ndarray, options: dict[str, int]) -> HammingIndex:
    index = HammingIndex(PDQ, threads=THREADS, **options)
    index.add(ids, bank)
    return index


def bench_flat(
    label: str, bank: np.ndarray, queries: np.ndarray, singles: int
) -> tuple[list[set[tuple[int, int]]], float]:
    def build() -> object:
        flat = faiss.IndexBinaryFlat(256)
        flat.add(bank)
        return flat

    flat, took, mem = measured(build)
    t = time.perf_counter()
    lims, dist, ids = flat.range_search(queries, R + 1)  # faiss keeps distances < radius
    batch = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    single = latencies(lambda i: flat.range_search(queries[i : i + 1], R + 1), singles)
    faiss.omp_set_num_threads(THREADS)
    truth = truth_sets(lims, dist, ids)
    row(
        data=label,
        index="faiss IndexBinaryFlat",
        **{
            "build s": f"{took:.1f}",
            "memory MB": f"{mem / 1e6:.0f}",
            "single p50 ms": ms(float(np.median(single))),
            "single p99 ms": ms(float(np.percentile(single, 99))),
            "batch q/s": f"{len(queries) / batch:,.0f}",
            "x flat": "1",
            "recall": "100% (reference)",
        },
    )
    return truth, len(queries) / batch


def bench_threatexchange(label: str, bank: np.ndarray, queries: np.ndarray, n_queries: int) -> str:
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex

    hexes = [c.tobytes().hex() for c in bank]
    index, took, mem = measured(lambda: PDQIndex(zip(hexes, range(len(hexes)), strict=True)))
    assert isinstance(index, PDQIndex)
    found: list[set[tuple[int, int]]] = []

    def one(i: int) -> None:
        matches = index.query(queries[i].tobytes().hex())
        found.append({(int(m.metadata), int(m.similarity_info.distance)) for m in matches})

    single = latencies(one, n_queries)
    row(
        data=label,
        index="threatexchange PDQIndex",
        **{
            "build s": f"{took:.1f}",
            "memory MB": f"{mem / 1e6:.0f}",
            "single p50 ms": ms(float(np.median(single))),
            "single p99 ms": ms(float(np.percentile(single, 99))),
            "batch q/s": f"{1 / float(np.mean(single)):,.0f} (no batch API)",
        },
    )
    return found  # type: ignore[return-value]


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n:,}")
def test_random_pdq(benchmark: object, n: int) -> None:
    bank, queries = random_bank(n)
    label = f"random {n / 1e6:g}M"
    found, ours = bench_matcher(benchmark, label, bank, queries)
    truth, flat = bench_flat(label, bank, queries, singles=20 if n > 2_000_000 else 100)
    ROWS[-2]["x flat"] = f"{ours / flat:.0f}"
    ROWS[-2]["recall"] = recall(found, truth)
    write_results()
    assert found == truth, "matcher must return exactly what brute force returns"
    if WITH_TE:
        k = 100
        te = bench_threatexchange(label, bank, queries, k)
        ROWS[-1]["recall"] = recall(te, truth[:k])  # type: ignore[arg-type]
        ROWS[-1]["x flat"] = (
            f"{float(ROWS[-1]['batch q/s'].split()[0].replace(',', '')) / flat:.1f}"
        )
        write_results()


# ---------------------------------------------------------------------------- real photos


def _pdq_of(path: str) -> list[tuple[bytes, int, bytes]]:
    """PDQ (8 dihedral variants) of a photo and of a mildly edited copy of it."""
    import io

    import pdqhash
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
        w, h = im.size
        edited = im.convert("RGB").resize((w * 4 // 5, h * 4 // 5))
    buf = io.BytesIO()
    edited.save(buf, "JPEG", quality=60)
    buf.seek(0)
    with Image.open(buf) as im2:
        edited_rgb = np.asarray(im2.convert("RGB"))
    variants, quality = pdqhash.compute_dihedral(rgb)
    q_hash, _ = pdqhash.compute(edited_rgb)
    return [
        (np.packbits(v.astype(np.uint8)).tobytes(), int(quality), np.packbits(q_hash).tobytes())
        for v in variants
    ]


def bucket_sizes(index: HammingIndex) -> list[np.ndarray]:
    """Rows per key, per table, of an index with one segment (read from its directory, whose
    lanes hold running totals per block)."""
    (segment,) = index._segments
    t = segment.tables
    assert t is not None
    out = []
    for table in range(t.m):
        width, length = int(t.widths[table]), int(t.lengths[table])
        blocks = K.directory_blocks(length, width)
        at = int(t.dir_base[table]) * K.BLOCK
        lanes = t.directory[at : at + blocks * K.BLOCK].reshape(blocks, K.BLOCK)[:, :60]
        dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[width]
        totals = np.ascontiguousarray(lanes).view(dtype).astype(np.int64)  # running totals
        sizes = np.diff(totals, axis=1, prepend=0)
        out.append(sizes.reshape(-1)[: 1 << length])
    return out


def candidates_per_query(index: HammingIndex, queries: np.ndarray, r: int) -> np.ndarray:
    """Rows each query reads (with repeats across tables): the cost driver."""
    (segment,) = index._segments
    t = segment.tables
    assert t is not None
    sizes = bucket_sizes(index)
    radii = t.radii(r)
    words = index._to_words(queries)  # shuffled, as the index sees them
    out = np.zeros(len(queries), dtype=np.int64)
    for qi, q in enumerate(words):
        bits = np.unpackbits(q.view(np.uint8), bitorder="little")
        for table in range(t.m):
            s, length = int(t.starts[table]), int(t.lengths[table])
            key = int(sum(int(b) << j for j, b in enumerate(bits[s : s + length])))
            for k in range(int(radii[table]) + 1):
                for flips in combinations(range(length), k):
                    probe = key
                    for f in flips:
                        probe ^= 1 << f
                    out[qi] += int(sizes[table][probe])
    return out


def collision_ratio(words: np.ndarray, m: int) -> np.ndarray:
    """Per substring of an ``m``-way split: pairs of codes with equal keys, over the number
    expected of uniform random codes (1.0: no skew)."""
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    starts, lengths = K.split(bits.shape[1], m)
    n = len(words)
    out = []
    for s, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        keys = (bits[:, s : s + length].astype(np.int64) << np.arange(length)).sum(axis=1)
        _, c = np.unique(keys, return_counts=True)
        out.append((c * (c - 1) // 2).sum() / (n * (n - 1) / 2 / 2.0**length))
    return np.array(out)


def test_real_photos(benchmark: object) -> None:
    photos = sorted(str(p) for p in (DATA / "photos").rglob("*.jpg"))
    if not photos:
        pytest.skip(f"no photos under {DATA / 'photos'} (set MATCHER_TEST_DATA)")
    t = time.perf_counter()
    with ProcessPoolExecutor(THREADS) as pool:
        hashed = list(pool.map(_pdq_of, photos, chunksize=32))
    took = time.perf_counter() - t
    bank = np.array(
        [np.frombuffer(v, np.uint8) for per in hashed for v, q, _ in per if q >= PDQ.quality_floor]
    )
    queries = np.array([np.frombuffer(per[0][2], np.uint8) for per in hashed])
    rng = np.random.default_rng(1)
    queries = queries[rng.choice(len(queries), size=min(BATCH, len(queries)), replace=False)]
    label = f"photos {len(bank):,}"
    NOTES.append(
        f"Photos: {len(photos):,} JPEGs under photos/, hashed in {took:.0f} s; the bank holds "
        f"the 8 dihedral PDQ variants of each photo with quality >= {PDQ.quality_floor}; the "
        f"queries are {len(queries)} photos resized to 80% and re-encoded as JPEG quality 60."
    )
    found, ours = bench_matcher(benchmark, label, bank, queries)
    truth, flat = bench_flat(label, bank, queries, singles=100)
    ROWS[-2]["x flat"] = f"{ours / flat:.1f}"
    ROWS[-2]["recall"] = recall(found, truth)
    assert found == truth

    # Skew: rows read per query on real codes against random codes of the same count.
    real = HammingIndex(PDQ, threads=1)
    real.add(np.arange(len(bank)), bank)
    rand_bank, _ = random_bank(len(bank), seed=2)
    rand = HammingIndex(PDQ, threads=1)
    rand.add(np.arange(len(bank)), rand_bank)
    sample = queries[:200]
    c_real = candidates_per_query(real, sample, R)
    c_rand = candidates_per_query(rand, rng.integers(0, 256, (200, 32), dtype=np.uint8), R)
    (seg,) = real._segments
    sizes = np.concatenate(bucket_sizes(real))
    NOTES.append(
        f"Skew on real photos ({len(bank):,} codes, {seg.tables.m} tables): rows read per "  # type: ignore[union-attr]
        f"query median {np.median(c_real):.0f}, p99 {np.percentile(c_real, 99):.0f}, max "
        f"{c_real.max()} against median {np.median(c_rand):.0f}, max {c_rand.max()} on random "
        f"codes of the same count; largest bucket {sizes.max()} rows (mean of non-empty "
        f"{sizes[sizes > 0].mean():.2f})."
    )
    write_results()
    # The same skew measured directly: equal 16-bit substrings among distinct photos (one
    # orientation each), with bits in hash order and as the index shuffles them.
    originals = np.array([np.frombuffer(per[0][0], np.uint8) for per in hashed])
    plain = collision_ratio(originals.view(np.uint64), 16)
    shuffled = collision_ratio(real._to_words(originals), 16)
    NOTES.append(
        f"Equal 16-bit substrings among {len(originals):,} photos, relative to random codes: "
        f"bits in hash order mean {plain.mean():.1f}x (worst substring {plain.max():.1f}x); "
        f"bits shuffled as the index does mean {shuffled.mean():.1f}x (worst "
        f"{shuffled.max():.1f}x)."
    )
    write_results()


def test_real_views(benchmark: object) -> None:
    """Rule 5 on the service's workload at full size: the ``enroll``-profile views of the
    cached photos (``bench.views_cache``), padded with random codes to the first size of
    ``MATCHER_BENCH_SIZES``, searched with every view of the cached ``query``-profile uploads;
    matcher against brute force, result for result."""
    from bench import views_cache

    photos = views_cache.cached()
    if not photos:
        pytest.skip("no cached views: python -m bench.views_cache -j 2 (see its docstring)")
    real = np.concatenate(views_cache.enrolled(photos))
    n = max(SIZES[0], len(real))
    rng = np.random.default_rng(15)
    bank = np.concatenate([real, rng.integers(0, 256, (n - len(real), 32), dtype=np.uint8)])
    bank = bank[rng.permutation(n)]
    queries = np.concatenate([codes for codes, _ in views_cache.uploads(photos)])
    label = f"real views {len(real):,} + random, {n / 1e6:g}M"
    NOTES.append(
        f"Real views: {len(real):,} enroll-profile PDQ views of {len(photos):,} photos padded "
        f"with random codes to {n:,}; queries: the {len(queries):,} query-profile views of "
        f"edited copies of the same photos."
    )
    found, ours = bench_matcher(benchmark, label, bank, queries)
    truth, flat = bench_flat(label, bank, queries, singles=20)
    ROWS[-2]["x flat"] = f"{ours / flat:.1f}"
    ROWS[-2]["recall"] = recall(found, truth)
    write_results()
    assert found == truth, "matcher must return exactly what brute force returns"
    assert sum(map(len, truth)) > len(photos) // 2  # the edits do find their photos
