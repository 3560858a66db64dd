"""The gRPC service under load, on loopback, against two baselines in the same run.

- **matcher**: ``matcher serve`` in its own process over a bank of N random PDQ hashes
  (default 1,000,000; ``MATCHER_BENCH_SERVICE_HASHES``), with auth, rate limits and metrics on.
- **echo**: a bare ``grpc.aio`` server in its own process whose ``Match`` handler does nothing
  but answer, with the same request and response messages: the ceiling of Python gRPC here.
- **in-process**: ``Bank.match`` called directly: what the network layer costs.

Measured: single-query requests per second and latency (p50, p99) with 1 and 64 concurrent
callers; ``Match`` with batches of 1,000 queries; ``StreamMatch`` with 1,000-query messages.
Client and server share this machine's 2 cores, as in FACTS.md.

Run: ``make bench`` (results in ``bench/results/service.md``).
"""

from __future__ import annotations

import asyncio
import os
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.conftest import report
from matcher.bank import Bank, Query
from matcher.principal import Principal, Role
from matcher.signals import PDQ, Hash
from matcher.v1 import match_pb2, match_pb2_grpc

N_HASHES = int(os.environ.get("MATCHER_BENCH_SERVICE_HASHES", "1000000"))
SECONDS = float(os.environ.get("MATCHER_BENCH_SECONDS", "8"))
HEADER = (
    "| measure | matcher | echo server | in-process bank | matcher / echo |\n"
    "|---|---:|---:|---:|---:|"
)
_ECHO = Path(__file__).with_name("echo_server.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(target: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{target} never became SERVING")


def _build_bank(folder: Path, n: int) -> tuple[str, list[bytes]]:
    """A data folder with ``n`` random PDQ hashes in cases of 10,000; returns a partner key and
    a sample of stored values (to query hits as well as misses)."""
    rng = np.random.default_rng(7)
    me = Principal.operator("bench")
    with Bank.open(folder, load=False, progress=False) as bank:
        org = bank.create_organisation("bench", by=me)
        practitioner = Principal.key(0, Role.PRACTITIONER, org_id=org.id)
        sample = []
        for start in range(0, n, 10_000):
            codes = rng.integers(0, 256, (min(10_000, n - start), 32), dtype=np.uint8)
            case = bank.create_case(by=practitioner)
            bank.enroll(case.number, [Hash(PDQ, c.tobytes(), 90) for c in codes], by=practitioner)
            sample.append(codes[0].tobytes())
        key = bank.create_api_key("bench", Role.PARTNER, by=me).key
    return key, sample


@pytest.fixture(scope="module")
def bank_folder() -> Iterator[tuple[Path, str, list[bytes]]]:
    with tempfile.TemporaryDirectory(prefix="matcher-bench-") as tmp:
        folder = Path(tmp) / "data"
        key, sample = _build_bank(folder, N_HASHES)
        yield folder, key, sample


@pytest.fixture(scope="module")
def servers(bank_folder) -> Iterator[dict[str, str]]:
    folder, key, _ = bank_folder
    ours, echo = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable, "-m", "matcher.cli", "serve", "--data", str(folder),
                "--address", f"127.0.0.1:{ours}", "--metrics-address", "127.0.0.1:0",
                "--rate", "1000000", "--burst", "1000000", "--log-level", "WARNING",
            ],
            env={**os.environ, "MATCHER_PROGRESS": "0"},
        ),
        subprocess.Popen([sys.executable, str(_ECHO), f"127.0.0.1:{echo}"]),
    ]  # fmt: skip
    try:
        for target in (f"127.0.0.1:{ours}", f"127.0.0.1:{echo}"):
            _wait_serving(target)
        yield {"matcher": f"127.0.0.1:{ours}", "echo": f"127.0.0.1:{echo}", "key": key}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def _queries(sample: list[bytes], n: int, rng: np.random.Generator) -> list[match_pb2.Query]:
    """``n`` single-hash queries, 1 in 10 a near-duplicate of a stored hash (a hit)."""
    out = []
    for i in range(n):
        if i % 10 == 0:
            bits = np.unpackbits(np.frombuffer(sample[i % len(sample)], np.uint8))
            bits[rng.choice(256, 8, replace=False)] ^= 1
            value = np.packbits(bits).tobytes()
        else:
            value = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
        out.append(match_pb2.Query(hashes=[{"signal_type": 1, "value": value}]))
    return out


async def _load(target: str, key: str, requests: list, concurrency: int, seconds: float):
    """Unary Match calls from ``concurrency`` callers for ``seconds``: (calls/s, latencies)."""
    latencies: list[float] = []
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        await stub.Match(requests[0], metadata=metadata, timeout=10)  # connect, warm up
        stop_at = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await stub.Match(requests[i % len(requests)], metadata=metadata, timeout=10)
                latencies.append(time.perf_counter() - t0)
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, np.array(latencies)


async def _open_loop(target: str, key: str, requests: list, rate: float, seconds: float):
    """Calls started at a fixed total ``rate`` by 64 callers, whatever the answers' speed.

    A closed loop of 64 callers measures queueing (Little's law: 64 in flight at 1,400 calls/s
    is 45 ms each); a moderation pipeline sends an upload's query when the upload arrives, so
    latency at a given offered load is what it sees. Latency counts from the scheduled start,
    so a slow server cannot hide its backlog.
    """
    metadata = (("authorization", f"Bearer {key}"),)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        await stub.Match(requests[0], metadata=metadata, timeout=10)
        start = time.perf_counter()
        total = int(rate * seconds)

        async def caller(c: int) -> None:
            for i in range(c, total, 64):
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await stub.Match(requests[i % len(requests)], metadata=metadata, timeout=10)
                latencies.append(time.perf_counter() - due)

        await asyncio.gather(*(caller(c) for c in range(64)))
    return np.array(latencies)


async def _stream(target: str, key: str, messages: list, seconds: float) -> float:
    """Hashes per second through StreamMatch with a few messages in flight."""
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        stop_at = time.perf_counter() + seconds
        sent = 0

        async def requests():
            nonlocal sent
            while time.perf_counter() < stop_at:
                yield messages[sent % len(messages)]
                sent += 1

        started = time.perf_counter()
        answered = 0
        async for reply in stub.StreamMatch(requests(), metadata=metadata):
            answered += len(reply.results)
        return answered / (time.perf_counter() - started)


def _row(name: str, ours: float, echo: float | None, local: float | None, unit: str) -> None:
    ratio = f"{ours / echo:.0%}" if echo else "-"
    fmt = (lambda v: f"{v:,.0f} {unit}") if unit != "ms" else (lambda v: f"{v:.2f} ms")
    report(
        "service",
        HEADER,
        f"| {name} | {fmt(ours)} | {fmt(echo) if echo else '-'} | "
        f"{fmt(local) if local else '-'} | {ratio} |",
    )


@pytest.mark.parametrize("concurrency", [1, 64])
def test_single_query_requests(benchmark, servers, bank_folder, concurrency: int) -> None:
    folder, _key, sample = bank_folder
    requests = [
        match_pb2.MatchRequest(queries=[q])
        for q in _queries(sample, 2000, np.random.default_rng(1))
    ]
    results = {}

    def run() -> None:
        for name in ("echo", "matcher"):
            results[name] = asyncio.run(
                _load(servers[name], servers["key"], requests, concurrency, SECONDS)
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    with Bank.open(folder, progress=False) as bank:
        domain = [Query([Hash(PDQ, r.queries[0].hashes[0].value)]) for r in requests]
        t0 = time.perf_counter()
        for q in domain:
            bank.match([q])
        local = len(domain) / (time.perf_counter() - t0)
    (rps, lat), (echo_rps, echo_lat) = results["matcher"], results["echo"]
    _row(f"single query, {concurrency} callers: calls/s", rps, echo_rps, local, "/s")
    for pct in (50, 99):
        _row(
            f"single query, {concurrency} callers: p{pct} latency",
            np.percentile(lat, pct) * 1000,
            np.percentile(echo_lat, pct) * 1000,
            None,
            "ms",
        )


@pytest.mark.parametrize("rate", [300, 600])
def test_latency_at_a_given_load(benchmark, servers, bank_folder, rate: int) -> None:
    _folder, _key, sample = bank_folder
    requests = [
        match_pb2.MatchRequest(queries=[q])
        for q in _queries(sample, 2000, np.random.default_rng(3))
    ]
    results = {}

    def run() -> None:
        for name in ("echo", "matcher"):
            results[name] = asyncio.run(
                _open_loop(servers[name], servers["key"], requests, rate, SECONDS)
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    for pct in (50, 99):
        _row(
            f"64 callers, {rate} calls/s offered: p{pct} latency",
            np.percentile(results["matcher"], pct) * 1000,
            np.percentile(results["echo"], pct) * 1000,
            None,
            "ms",
        )


def test_batch_and_stream_throughput(benchmark, servers, bank_folder) -> None:
    folder, _key, sample = bank_folder
    rng = np.random.default_rng(2)
    batches = [match_pb2.MatchRequest(queries=_queries(sample, 1000, rng)) for _ in range(20)]
    messages = [match_pb2.StreamMatchRequest(queries=b.queries) for b in batches]
    results = {}

    def run() -> None:
        for name in ("echo", "matcher"):
            rate, _ = asyncio.run(_load(servers[name], servers["key"], batches, 2, SECONDS))
            results[name, "batch"] = rate * 1000
            results[name, "stream"] = asyncio.run(
                _stream(servers[name], servers["key"], messages, SECONDS)
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    with Bank.open(folder, progress=False) as bank:
        domain = [[Query([Hash(PDQ, q.hashes[0].value)]) for q in b.queries] for b in batches[:5]]
        t0 = time.perf_counter()
        for b in domain:
            bank.match(b)
        local = 5000 / (time.perf_counter() - t0)
    for kind in ("batch", "stream"):
        label = "Match, batches of 1,000" if kind == "batch" else "StreamMatch, 1,000 per message"
        _row(f"{label}: hashes/s", results["matcher", kind], results["echo", kind], local, "/s")
