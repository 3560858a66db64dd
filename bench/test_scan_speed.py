"""End-to-end images per second of `matcher scan` against `matcher hash` alone, in the same run.

- **hash**: ``matcher hash`` on ``../shared/data/photos`` to /dev/null: the hashing-only rate.
- **scan**: ``matcher scan`` on the same photos against ``matcher serve`` in its own process,
  over a bank of N random PDQ hashes (default 1,000,000; ``MATCHER_BENCH_SCAN_HASHES``), with a
  report file and its state (fsync'd), as a user runs it.

Both as processes, interleaved, best of 2 runs each (``MATCHER_BENCH_SCAN_ROUNDS``), with
``-j 1`` and ``-j 2``, and with and without the 7 dihedral PDQ variants
(``matcher hash --dihedral`` computes what ``matcher scan`` does by default). The target is a
scan at 90% or more of the hashing-only rate: the service and the network must not be the
bottleneck. Client, hashing processes and server share this machine's cores, so the table also
gives the CPU time per image of the scan's main process (stream, report, state; not its hashing
processes) and of the server, measured from their processes: on a machine whose cores the
hashing fills, that CPU comes out of the hashing's share.

Run: ``make bench`` (``MATCHER_BENCH_SCAN_HASHES=100000 MATCHER_BENCH_PHOTOS=1000 make bench``
for a quicker run). Results in ``bench/results/scan_speed.md``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.conftest import data_path, report
from bench.test_service_speed import _build_bank, _free_port, _wait_serving

N_HASHES = int(os.environ.get("MATCHER_BENCH_SCAN_HASHES", "1000000"))
ROUNDS = int(os.environ.get("MATCHER_BENCH_SCAN_ROUNDS", "2"))
HEADER = (
    "| bank | images | jobs | PDQ variants | hash only (images/s) | scan (images/s) "
    "| scan / hash | CPU per image: scan's main process, server |\n"
    "|---:|---:|---:|---|---:|---:|---:|---|"
)
_MATCHER = [sys.executable, "-m", "matcher.cli"]


@pytest.fixture(scope="module")
def listing() -> Iterator[Path]:
    """The photos to scan, as a listing file (a sample with ``MATCHER_BENCH_PHOTOS``)."""
    files = sorted(str(p) for p in data_path("photos").rglob("*.jpg"))
    limit = int(os.environ.get("MATCHER_BENCH_PHOTOS", "0"))
    if limit and limit < len(files):
        files = sorted(random.Random(0).sample(files, limit))
    with tempfile.TemporaryDirectory(prefix="matcher-bench-scan-") as tmp:
        path = Path(tmp) / "listing.txt"
        path.write_text("\n".join(files) + "\n")
        yield path


@pytest.fixture(scope="module")
def server() -> Iterator[dict]:
    with tempfile.TemporaryDirectory(prefix="matcher-bench-scan-") as tmp:
        folder = Path(tmp) / "data"
        key, _ = _build_bank(folder, N_HASHES)
        port = _free_port()
        proc = subprocess.Popen(
            [
                *_MATCHER, "serve", "--data", str(folder), "--address", f"127.0.0.1:{port}",
                "--metrics-address", "off", "--rate", "1000000", "--burst", "1000000",
                "--log-level", "WARNING",
            ],
            env={**os.environ, "MATCHER_PROGRESS": "0"},
        )  # fmt: skip
        try:
            _wait_serving(f"127.0.0.1:{port}", timeout=1800)
            yield {"target": f"127.0.0.1:{port}", "key": key, "pid": proc.pid, "tmp": tmp}
        finally:
            proc.terminate()
            proc.wait(60)


def _timed(command: list[str], env: dict[str, str], listing: Path) -> tuple[float, float]:
    """Run a command reading the photo paths from standard input ("-"): its wall time, and
    the CPU time of its main process (not of its hashing processes), sampled until it ends."""
    with listing.open() as stdin:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdin=stdin, stdout=subprocess.DEVNULL)
        watch, cpu = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            try:
                times = watch.cpu_times()
                cpu = times.user + times.system
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        assert proc.wait() == 0
        return time.perf_counter() - started, cpu


@pytest.mark.parametrize("dihedral", [True, False], ids=["dihedral", "original"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_scan_speed(benchmark, server: dict, listing: Path, jobs: int, dihedral: bool) -> None:
    n = sum(1 for line in listing.read_text().splitlines() if line)
    env = {**os.environ, "MATCHER_API_KEY": server["key"]}
    report_file = Path(server["tmp"]) / f"report-{jobs}-{dihedral}.jsonl"
    hash_cmd = [*_MATCHER, "hash", "-j", str(jobs), "-"]
    scan_cmd = [
        *_MATCHER, "scan", "-j", str(jobs), "--server", server["target"], "--restart",
        "-o", str(report_file), "--dihedral" if dihedral else "--no-dihedral", "-",
    ]  # fmt: skip
    if dihedral:
        hash_cmd.append("--dihedral")
    times: dict[str, float] = {}
    service = psutil.Process(server["pid"])

    def run() -> None:
        # Interleaved, best of ROUNDS each: other load on the machine comes and goes, and
        # hurts whichever command it meets; the best run of each is the fairest comparison.
        for _ in range(ROUNDS):
            took, _ = _timed(hash_cmd, env, listing)
            times["hash"] = min(times.get("hash", took), took)
            cpu = service.cpu_times()
            took, client_cpu = _timed(scan_cmd, env, listing)
            after = service.cpu_times()
            if took <= times.get("scan", took):
                times["scan"], times["client_cpu"] = took, client_cpu
                times["server_cpu"] = (after.user + after.system) - (cpu.user + cpu.system)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert Path(f"{report_file}.state").exists()
    hash_rate, scan_rate = n / times["hash"], n / times["scan"]
    report(
        "scan_speed",
        HEADER,
        f"| {N_HASHES:,} | {n:,} | {jobs} | {'8 (dihedral)' if dihedral else '1'} "
        f"| {hash_rate:,.1f} | {scan_rate:,.1f} | {scan_rate / hash_rate:.0%} "
        f"| {times['client_cpu'] / n * 1000:.2f} ms, {times['server_cpu'] / n * 1000:.2f} ms |",
    )
