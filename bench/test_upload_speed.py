"""Uploads per second through gRPC, as a partner's pipeline calls it (issue 15).

One ``Match`` per upload, each upload the shipped ``query`` profile's PDQ views of an edited
photo plus its pHash (about 25 hashes), against a bank of real ``enroll``-profile views (one item
per photo, about 223 hashes) padded with random PDQ codes in items of 200 up to
``MATCHER_BENCH_UPLOAD_HASHES`` (default 1,000,000; 10M:
``MATCHER_BENCH_UPLOAD_HASHES=10000000``). Half the cached photos are enrolled, so about half the
uploads are hits and half misses. Three servers in their own processes, in the same run:

- **after**: ``matcher serve`` as shipped (``match_workers`` one per core: searches off the event
  loop, concurrent requests gathered into one search; see ``matcher.service.dispatch``);
- **before**: with ``MATCHER_BENCH_BEFORE_TREE`` set to another checkout of the project (for
  example ``git archive main | tar -x -C ../before``), that tree's code served as shipped, on the
  same bank (a copy of its folder when that tree writes an older schema, built at that version):
  the A/B of a change to the index or the match path in one run. Unset: this
  tree with ``match_workers=0``, every match inline on the event loop, as before issue 15;
- **echo**: a bare ``grpc.aio`` server answering the same messages with nothing (the ceiling of
  Python gRPC on this machine, with the load generator sharing its cores).

Measured: uploads/s, p50/p99 latency and the server's CPU (seconds per upload and cores used,
from ``/proc``) with 16 and 64 closed-loop callers; p50/p99 at fixed offered loads (an open
loop: each call starts on schedule whatever the answers' speed; ``MATCHER_BENCH_UPLOAD_RATES``,
default 200 and 400 a second); uploads/s through ``StreamMatch`` with messages of 50 uploads,
two in flight per stream. Ratios to echo are the figures that hold across a
shared machine's load.

The views come from ``bench.views_cache`` (hashing all 4,081 shared photos takes CPU-hours; run
``python -m bench.views_cache -j 2`` once, resumable). With an empty cache this benchmark hashes
the first ``MATCHER_BENCH_UPLOAD_PHOTOS`` (default 40) photos itself, about a minute.

``MATCHER_BENCH_PYSPY=FILE``: record the "after" server with py-spy (bench extra) while 16
callers run, as collapsed stacks in FILE (``py-spy record --format raw``), for a CPU profile of
the server under load; summarise with ``python -m bench.pyspy_summary FILE``.

Writes ``bench/results/uploads.md``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench import views_cache
from bench.conftest import data_path, report
from matcher import contract
from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.records import NewItem, Query
from matcher.signals import PDQ, PHASH, Hash
from matcher.store import SQLiteStore
from matcher.store.crypto import default_key_file
from matcher.store.sqlite import SCHEMA_VERSION
from matcher.store.sqlite_schema import MIGRATIONS
from matcher.v1 import match_pb2, match_pb2_grpc

N_HASHES = int(os.environ.get("MATCHER_BENCH_UPLOAD_HASHES", "1000000"))
PHOTOS = int(os.environ.get("MATCHER_BENCH_UPLOAD_PHOTOS", "40"))
SECONDS = float(os.environ.get("MATCHER_BENCH_SECONDS", "8"))
RATES = [int(r) for r in os.environ.get("MATCHER_BENCH_UPLOAD_RATES", "200,400").split(",")]
SERVERS = ("echo", "before", "after")
BEFORE_TREE = os.environ.get("MATCHER_BENCH_BEFORE_TREE", "")
HEADER = (
    f"| measure | after | before ({'that tree' if BEFORE_TREE else 'inline'}) | echo "
    "| after / echo | before / echo |\n"
    "|---|---:|---:|---:|---:|---:|"
)
_HERE = Path(__file__).parent
_TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process and its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _schema_of(tree: Path) -> int:
    """The SQLite schema version ``tree``'s code writes."""
    done = subprocess.run(
        [sys.executable, "-c", "from matcher.store.sqlite import SCHEMA_VERSION as v; print(v)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,  # ``-c`` puts the working folder first on the path
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def _build(
    folder: Path, schema: int | None = None
) -> tuple[str, list[match_pb2.MatchRequest], dict[str, int]]:
    """The bank (real views of the even-numbered cached photos, padded with random codes), a
    partner key, and one request per cached photo's upload (odd ones are misses). ``schema``:
    the store's schema version to write (an older one, for a before tree that cannot open
    this tree's)."""
    data_path("photos")
    photos = views_cache.cached()
    if len(photos) < PHOTOS:
        views_cache.generate(PHOTOS, jobs=2)
        photos = views_cache.cached()
    enrolled = [k for k in photos if k % 2 == 0]
    me = Principal.operator("bench")
    rng = np.random.default_rng(15)
    real = 0
    store = SQLiteStore(folder, _migrations=None if schema is None else MIGRATIONS[:schema])
    with Bank(store) as bank:
        org = bank.accounts.create_organisation("bench", by=me)
        practitioner = Principal.key(0, Role.PRACTITIONER, org_id=org.id)
        items = []
        for codes in views_cache.enrolled(enrolled):
            if len(codes):
                items.append(NewItem([Hash(PDQ, c.tobytes(), 90) for c in codes]))
                real += len(codes)
        padding = max(0, N_HASHES - real)
        for start in range(0, padding, 200):
            codes = rng.integers(0, 256, (min(200, padding - start), 32), dtype=np.uint8)
            items.append(NewItem([Hash(PDQ, c.tobytes(), 90) for c in codes]))
        order = rng.permutation(len(items))  # real items spread through the row ids
        for start in range(0, len(items), 50):
            case = bank.create_case(by=practitioner)
            bank.enroll(case.number, [items[i] for i in order[start : start + 50]], by=practitioner)
        key = bank.accounts.create_api_key("bench", Role.PARTNER, org_id=None, by=me).key
    requests = []
    hashes = 0
    for codes, ph in views_cache.uploads(photos):
        query = Query([Hash(PDQ, c.tobytes(), 90) for c in codes] + [Hash(PHASH, ph)])
        hashes += len(query.hashes)
        requests.append(match_pb2.MatchRequest(queries=contract.queries_to_pb([query])))
    sizes = {
        "real views": real,
        "random codes": padding,
        "photos enrolled": len(enrolled),
        "uploads": len(requests),
        "hashes per upload": round(hashes / len(requests)),
    }
    return key, requests, sizes


@pytest.fixture(scope="module")
def setup() -> Iterator[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="matcher-bench-uploads-") as tmp:
        folder = Path(tmp) / "data"
        t0 = time.perf_counter()
        # A before tree at an older schema cannot open a folder this tree migrated: the bank
        # is built at the older version, and "after" serves a copy, which it migrates.
        older = _schema_of(Path(BEFORE_TREE)) if BEFORE_TREE else SCHEMA_VERSION
        key, requests, sizes = _build(folder, older if older < SCHEMA_VERSION else None)
        before_folder = folder
        if older < SCHEMA_VERSION:
            folder = Path(tmp) / "data-after"
            shutil.copytree(before_folder, folder)
            shutil.copy(default_key_file(before_folder), default_key_file(folder))
        built = time.perf_counter() - t0
        ports = {name: _free_port() for name in SERVERS}
        server = str(_HERE / "match_server.py")
        commands = {
            "echo": [str(_HERE / "echo_server.py"), f"127.0.0.1:{ports['echo']}"],
            "before": [server, str(folder), f"127.0.0.1:{ports['before']}", "0"],
            "after": [server, str(folder), f"127.0.0.1:{ports['after']}", "default"],
        }
        envs = {n: {**os.environ, "PYTHONPATH": str(_HERE.parent)} for n in SERVERS}
        if BEFORE_TREE:
            tree = Path(BEFORE_TREE).resolve()
            commands["before"] = [
                str(tree / "bench" / "match_server.py"),
                str(before_folder),
                f"127.0.0.1:{ports['before']}",
                "default",
            ]
            envs["before"]["PYTHONPATH"] = str(tree)
        procs = {
            n: subprocess.Popen([sys.executable, *c], env=envs[n]) for n, c in commands.items()
        }
        try:
            from bench.test_service_speed import _wait_serving

            for name in SERVERS:
                _wait_serving(f"127.0.0.1:{ports[name]}")
            report(
                "uploads_setup",
                "| bank | value |\n|---|---:|",
                f"| built in | {built:.0f} s |",
            )
            for k, v in sizes.items():
                report("uploads_setup", "", f"| {k} | {v:,} |")
            yield {
                "key": key,
                "requests": requests,
                "targets": {n: f"127.0.0.1:{p}" for n, p in ports.items()},
                "pids": {n: p.pid for n, p in procs.items()},
            }
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(30)


async def _closed(target: str, key: str, requests: list, callers: int, seconds: float):
    """``callers`` callers, each one Match at a time, for ``seconds``: (uploads/s, latencies)."""
    metadata = (("authorization", f"Bearer {key}"),)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for r in requests[:callers]:
            await stub.Match(r, metadata=metadata, timeout=60)  # connect, warm up
        stop_at = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await stub.Match(requests[i % len(requests)], metadata=metadata, timeout=60)
                latencies.append(time.perf_counter() - t0)
                i += callers

        started = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(callers)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, np.array(latencies)


async def _open(target: str, key: str, requests: list, rate: float, seconds: float):
    """Calls started at a fixed total ``rate`` (64 callers), latency from the scheduled start."""
    metadata = (("authorization", f"Bearer {key}"),)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        await stub.Match(requests[0], metadata=metadata, timeout=10)
        total = int(rate * seconds)
        start = time.perf_counter()

        async def caller(c: int) -> None:
            for i in range(c, total, 64):
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await stub.Match(requests[i % len(requests)], metadata=metadata, timeout=30)
                latencies.append(time.perf_counter() - due)

        await asyncio.gather(*(caller(c) for c in range(64)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, np.array(latencies)


async def _streams(target: str, key: str, requests: list, seconds: float, n: int = 4) -> float:
    """Uploads per second through ``n`` StreamMatch streams of 50-upload messages."""
    metadata = (("authorization", f"Bearer {key}"),)
    queries = [r.queries[0] for r in requests]
    messages = [
        match_pb2.StreamMatchRequest(queries=[queries[(s + j) % len(queries)] for j in range(50)])
        for s in range(0, len(queries), 50)
    ]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        stop_at = time.perf_counter() + seconds
        answered = 0

        async def one(offset: int) -> None:
            nonlocal answered
            # Two messages in flight per stream: gRPC would otherwise buffer what the client
            # can write in ``seconds`` and the server take minutes to drain it.
            window: asyncio.Queue[None] = asyncio.Queue()
            for _ in range(2):
                window.put_nowait(None)

            async def gen():
                i = offset
                while time.perf_counter() < stop_at:
                    await window.get()
                    yield messages[i % len(messages)]
                    i += n

            async for reply in stub.StreamMatch(gen(), metadata=metadata):
                answered += len(reply.results)
                window.put_nowait(None)

        started = time.perf_counter()
        await asyncio.gather(*(one(s) for s in range(n)))
        return answered / (time.perf_counter() - started)


def _measured(setup: dict, name: str, run, profile: str = "") -> tuple[object, float, float]:  # type: ignore[no-untyped-def]
    """``run(target)``'s value, the server's CPU seconds and the wall seconds it took; with
    ``profile``, a py-spy recording of the server meanwhile, written there."""
    pid = setup["pids"][name]
    spy = None
    if profile:
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
             "--format", "raw", "--output", profile, "--rate", "200", "--threads",
             "--nonblocking", "--duration", str(int(SECONDS) + 1)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # attached before the calls start
    cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
    value = asyncio.run(run(setup["targets"][name]))
    took = _cpu_seconds(pid) - cpu0, time.perf_counter() - t0
    if spy is not None:
        spy.wait(60)
    return value, *took


def _row(measure: str, values: dict[str, float], fmt: str, ratio: bool = True) -> None:
    cells = [fmt.format(values[n]) for n in ("after", "before", "echo")]
    ratios = (
        [f"{values['after'] / values['echo']:.0%}", f"{values['before'] / values['echo']:.0%}"]
        if ratio
        else ["-", "-"]
    )
    report("uploads", HEADER, f"| {measure} | " + " | ".join(cells + ratios) + " |")


@pytest.mark.parametrize("callers", [16, 64])
def test_uploads_per_second(benchmark, setup, callers: int) -> None:
    key, requests = setup["key"], setup["requests"]
    got: dict[str, tuple] = {}

    profile = os.environ.get("MATCHER_BENCH_PYSPY", "") if callers == 16 else ""

    def run() -> None:
        for name in SERVERS:
            got[name] = _measured(
                setup,
                name,
                lambda t: _closed(t, key, requests, callers, SECONDS),
                profile if name == "after" else "",
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    rate = {n: got[n][0][0] for n in SERVERS}
    _row(f"{callers} callers: uploads/s", rate, "{:,.0f}")
    for pct in (50, 99):
        lat = {n: float(np.percentile(got[n][0][1], pct)) * 1000 for n in SERVERS}
        _row(f"{callers} callers: p{pct} ms", lat, "{:.1f}", ratio=False)
    uploads = {n: got[n][0][0] * got[n][2] for n in SERVERS}
    per_upload = {n: got[n][1] / uploads[n] * 1000 for n in SERVERS}
    _row(f"{callers} callers: server CPU ms per upload", per_upload, "{:.2f}", ratio=False)
    cores = {n: got[n][1] / got[n][2] for n in SERVERS}
    _row(f"{callers} callers: server cores busy", cores, "{:.2f}", ratio=False)


@pytest.mark.parametrize("rate", RATES)
def test_latency_at_a_fixed_offered_load(benchmark, setup, rate: int) -> None:
    key, requests = setup["key"], setup["requests"]
    got: dict[str, tuple] = {}

    def run() -> None:
        for name in SERVERS:
            got[name] = _measured(setup, name, lambda t: _open(t, key, requests, rate, SECONDS))

    benchmark.pedantic(run, rounds=1, iterations=1)
    done = {n: got[n][0][0] for n in SERVERS}
    _row(f"{rate}/s offered: uploads/s answered", done, "{:,.0f}")
    for pct in (50, 99):
        lat = {n: float(np.percentile(got[n][0][1], pct)) * 1000 for n in SERVERS}
        _row(f"{rate}/s offered: p{pct} ms", lat, "{:.1f}", ratio=False)


def test_stream_match_uploads(benchmark, setup) -> None:
    key, requests = setup["key"], setup["requests"]
    got: dict[str, tuple] = {}

    def run() -> None:
        for name in SERVERS:
            got[name] = _measured(setup, name, lambda t: _streams(t, key, requests, SECONDS))

    benchmark.pedantic(run, rounds=1, iterations=1)
    _row(
        "StreamMatch, 4 streams of 50-upload messages: uploads/s",
        {n: got[n][0] for n in SERVERS},
        "{:,.0f}",
    )
