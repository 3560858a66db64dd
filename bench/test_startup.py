"""Start-up: how long the bank takes to rebuild its index from the store, and what it holds.

Target (issue 3): under 60 s at 10 million PDQ hashes on the 2-core machine.

Each measurement runs in a fresh process, so resident memory is that of a service starting up,
not of this test process (which filled the store). Compared in the same run, over the same
file:

- ``read file``: reading the database file's bytes, the I/O floor (warm page cache here: a
  cold start adds the file size over the disk's bandwidth to every row);
- ``SELECT rows``: ``SELECT item_id, sealed FROM item_codes`` fetched into Python tuples
  (one sealed blob per item), the naive way to read a store;
- ``snapshot (plain)`` and ``snapshot``: reading every hash from a store snapshot (what the
  encryption touches: reading the blobs, opening them, unpacking into numpy), in CPU seconds
  of the process (less moved by other load than wall time), plain against sealed;
- ``bank.load (plain)``: the real start-up over a second store filled alike whose "cipher"
  only copies (same layout, same calls, no AES-GCM): the baseline of the encryption's cost;
- ``bank.load``: the real start-up (sealed items read in blocks of 512, opened with AES-GCM
  and unpacked straight into numpy, one bulk add per signal type, catch-up from the change
  log), with the kernels already compiled (``warm_up`` is its own step: seconds once, well
  under one when numba's cache is warm). The table gives its ratio to the plain load.

The store is filled as enrollments would fill it: items of ``_PER_ITEM`` hashes (an
enroll-profile image holds about 230), ``_PER_CASE`` hashes per enrollment call.

Sizes: ``MATCHER_BENCH_SIZES`` (comma-separated, default ``1000000``; e.g.
``MATCHER_BENCH_SIZES=1000000,10000000 make bench``). A filled store can be reused between runs
with ``MATCHER_BENCH_DATA=/some/folder`` (one sub-folder per size; 10M take ~1 GB and about a
minute to fill). Writes ``bench/results/startup.md`` (printed by ``bench/conftest.py``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from matcher.principal import Principal
from matcher.records import NewItem
from matcher.signals import PDQ, Hash
from matcher.store import open_store
from matcher.store.crypto import ItemCipher
from matcher.store.sqlite import DB_FILENAME

SIZES = [int(s) for s in os.environ.get("MATCHER_BENCH_SIZES", "1000000").split(",") if s]
RESULTS = Path(__file__).parent / "results" / "startup.md"
TARGET_SECONDS = 60.0
_PER_CASE = 10_000
_PER_ITEM = 230

# Each child prints one JSON line: the seconds of the measured step alone (not Python's own
# start-up), its peak RSS and the RSS it added. /proc/self/statm gives the current RSS.
_PRELUDE = """
import json, os, resource, sys, time
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
"""
_CHILDREN = {
    "read file": """
path = sys.argv[1] + "/matcher.db"
before = rss_mb(); t = time.perf_counter(); n = 0
with open(path, "rb", buffering=0) as f:
    while block := f.read(16 << 20):
        n += len(block)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": None, "before": before, "after": rss_mb(),
    "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""",
    "SELECT rows": """
import sqlite3
conn = sqlite3.connect(sys.argv[1] + "/matcher.db")
before = rss_mb(); t = time.perf_counter()
rows = conn.execute("SELECT item_id, sealed FROM item_codes ORDER BY item_id").fetchall()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": None, "before": before, "after": rss_mb(),
    "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""",
    "snapshot (plain)": """
import matcher.store.sqlite
from bench.test_startup import PlainCipher
matcher.store.sqlite.ItemCipher = PlainCipher
from matcher.store import open_store
store = open_store(sys.argv[1] + "-plain")
before = rss_mb(); t = time.process_time()
with store.snapshot() as snap:
    rows = sum(len(c.ids) for c in snap.chunks())
seconds = time.process_time() - t
print(json.dumps({"seconds": seconds, "rows": rows, "before": before, "after": rss_mb(),
    "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""",
    "snapshot": """
from matcher.store import open_store
store = open_store(sys.argv[1])
before = rss_mb(); t = time.process_time()
with store.snapshot() as snap:
    rows = sum(len(c.ids) for c in snap.chunks())
seconds = time.process_time() - t
print(json.dumps({"seconds": seconds, "rows": rows, "before": before, "after": rss_mb(),
    "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""",
    "bank.load (plain)": """
import matcher.store.sqlite
from bench.test_startup import PlainCipher
matcher.store.sqlite.ItemCipher = PlainCipher
from matcher.bank import Bank
from matcher.index import warm_up
from matcher.store import open_store
bank = Bank(open_store(sys.argv[1] + "-plain"))
warm_up()
before = rss_mb(); t = time.perf_counter()
bank.load()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": len(bank.follower.index), "before": before,
    "after": rss_mb(), "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""",
    "bank.load": """
from matcher.bank import Bank
from matcher.index import warm_up
from matcher.store import open_store
bank = Bank(open_store(sys.argv[1]))
warm_up()
before = rss_mb(); t = time.perf_counter()
bank.load()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": len(bank.follower.index), "before": before,
    "after": rss_mb(), "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""",
}


class PlainCipher(ItemCipher):
    """The baseline: the sealed layout (header, nonce, payload, tag-sized tail) with the
    payload copied in clear, so a load over it does everything but AES-GCM."""

    def seal(self, plain: bytes, context: bytes) -> bytes:
        return bytes(1 + 4 + 12) + plain + bytes(16)

    def open(self, blob: bytes, context: bytes) -> bytes:
        return bytes(blob)[17:-16]


_results: dict[tuple[int, str], list[dict]] = {}
_fill_seconds: dict[int, float] = {}


def _fill(folder: Path, n: int) -> None:
    """Enroll ``n`` random PDQ hashes through the store: one case and one call per
    ``_PER_CASE`` hashes, in items of ``_PER_ITEM``."""
    operator = Principal.operator("bench")
    rng = np.random.default_rng(n)
    with open_store(folder) as store:
        org = store.create_organisation("bench", actor=operator)
        for start in range(0, n, _PER_CASE):
            case = store.create_case(org.id, f"BENCH-{start}", "scrypt$none", actor=operator)
            codes = rng.integers(0, 256, (min(_PER_CASE, n - start), 32), dtype=np.uint8)
            hashes = [Hash(PDQ, row.tobytes(), 90) for row in codes]
            items = [NewItem(hashes[i : i + _PER_ITEM]) for i in range(0, len(hashes), _PER_ITEM)]
            store.add_items(case.id, items, actor=operator)
    (folder / "filled").write_text(str(n))


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n // 1000}k")
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    n = request.param
    cache = os.environ.get("MATCHER_BENCH_DATA")
    folder = Path(cache) / f"startup-{n}" if cache else tmp_path_factory.mktemp(f"startup-{n}")
    if not (folder / "filled").exists():
        started = time.perf_counter()
        _fill(folder, n)
        _fill_seconds[n] = time.perf_counter() - started
    plain = folder.with_name(folder.name + "-plain")
    if not (plain / "filled").exists():
        import unittest.mock

        with unittest.mock.patch("matcher.store.sqlite.ItemCipher", PlainCipher):
            _fill(plain, n)
    return folder


def _run_child(method: str, folder: Path) -> dict:
    env = {**os.environ, "MATCHER_PROGRESS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + _CHILDREN[method], str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", list(_CHILDREN))
def test_startup(benchmark, filled: Path, method: str) -> None:  # type: ignore[no-untyped-def]
    n = int((filled / "filled").read_text())
    rounds = 3 if n <= 2_000_000 else 1
    runs: list[dict] = []
    benchmark.pedantic(lambda: runs.append(_run_child(method, filled)), rounds=rounds)
    if runs[0]["rows"] is not None:
        assert all(r["rows"] == n for r in runs)
    benchmark.extra_info.update(
        seconds=statistics.median(r["seconds"] for r in runs),
        peak_rss_mb=max(r["peak"] for r in runs),
    )
    _results[(n, method)] = runs


def _table() -> str:
    lines = [
        "# Start-up from the store",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SQLite file in the page cache (warm). "
        "Seconds are the measured step alone (median of the rounds), in a fresh process; "
        "RSS added is resident memory after the step minus before it.",
        "",
        "| hashes | method | seconds (median) | rounds | hashes/s | RSS added MB | "
        "peak RSS MB | db file MB | target |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = list(_CHILDREN)
    for (n, method), runs in sorted(
        _results.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))
    ):
        seconds = statistics.median(r["seconds"] for r in runs)
        added = statistics.median(r["after"] - r["before"] for r in runs)
        peak = max(r["peak"] for r in runs)
        db_mb = (Path(_data_dirs[n]) / DB_FILENAME).stat().st_size / 2**20
        target = ""
        if method == "snapshot" and (n, "snapshot (plain)") in _results:
            base = statistics.median(r["seconds"] for r in _results[(n, "snapshot (plain)")])
            method = f"snapshot, CPU s ({seconds / base:.2f}x plain)"
        if method == "bank.load":
            plain = _results.get((n, "bank.load (plain)"))
            if plain:
                base = statistics.median(r["seconds"] for r in plain)
                method = f"bank.load ({seconds / base:.2f}x plain)"
            scaled = seconds * 10_000_000 / n
            verdict = "meets" if scaled < TARGET_SECONDS else "MISSES"
            target = f"{verdict} < {TARGET_SECONDS:.0f} s at 10M" + (
                "" if n >= 10_000_000 else f" (x{10_000_000 // n} linear: {scaled:.0f} s)"
            )
        lines.append(
            f"| {n:,} | {method} | {seconds:.2f} | {len(runs)} | {n / seconds:,.0f} | "
            f"{added:,.0f} | {peak:,.0f} | {db_mb:,.0f} | {target} |"
        )
    for n, seconds in sorted(_fill_seconds.items()):
        lines.append(
            f"\nFilling the store with {n:,} hashes through `SQLiteStore.add_items` "
            f"({_PER_CASE:,} per enrollment in items of {_PER_ITEM}, one commit each): "
            f"{seconds:.1f} s "
            f"({n / seconds:,.0f} hashes/s)."
        )
    return "\n".join(lines) + "\n"


_data_dirs: dict[int, str] = {}


@pytest.fixture(autouse=True)
def _remember_folder(request: pytest.FixtureRequest) -> None:
    if "filled" in request.fixturenames:
        folder = request.getfixturevalue("filled")
        _data_dirs[int((folder / "filled").read_text())] = str(folder)


@pytest.fixture(scope="module", autouse=True)
def _write_table() -> Iterator[None]:
    yield
    if _results:  # bench/conftest.py prints every table under bench/results/ at the end
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(_table())
