"""The victim failure budgets (``matcher.service.guesses``) on a real SQLite store, with a
clock the test moves: the sliding window, when a refused address may retry, the backoffs
that never refuse, and that only keyed hashes reach the store. (Across replicas on
PostgreSQL: ``tests/test_replicas.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from matcher.service.guesses import GuessLimits
from matcher.store import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "data") as s:
        yield s


def limits(store: SQLiteStore, clock: Clock, **kw: float) -> GuessLimits:
    args = {"failures": 3, "window": 900.0, "overall": 10, "backoff": 8.0, **kw}
    return GuessLimits(store, store.secret_key(), clock=clock, **args)  # type: ignore[arg-type]


def test_an_address_is_refused_until_its_failures_leave_the_window(store: SQLiteStore) -> None:
    clock = Clock()
    guard = limits(store, clock)
    assert guard.bucket_seconds == 60 and guard.buckets == 15
    guard.failed("ipv4:10.0.0.1", "CASE1")
    clock.now += 300
    guard.failed("ipv4:10.0.0.1", "CASE2")
    guard.failed("ipv4:10.0.0.1", "CASE3")
    verdict = guard.check("ipv4:10.0.0.1", "CASE4")
    assert verdict.refuse_for is not None
    # The first failure's bucket leaves the window 600 s from now (give or take a bucket).
    assert 540 < verdict.refuse_for <= 600
    # Another address is not refused (its own failures only); the cases are under budget.
    assert guard.check("ipv4:10.0.0.2", "CASE4").refuse_for is None
    clock.now += verdict.refuse_for
    assert guard.check("ipv4:10.0.0.1", "CASE4").refuse_for is None


def test_case_and_overall_budgets_make_calls_wait_never_refuse(store: SQLiteStore) -> None:
    clock = Clock()
    guard = limits(store, clock)
    for n in range(3):
        guard.failed(f"ipv4:10.0.1.{n}", "CASE")
    victim = guard.check("ipv4:192.168.0.9", "CASE")
    assert victim.refuse_for is None and victim.wait == 1.0
    for n in range(3, 8):
        guard.failed(f"ipv4:10.0.1.{n}", "CASE")
    assert guard.check("ipv4:192.168.0.9", "CASE").wait == 8.0  # doubled, capped
    assert guard.check("ipv4:192.168.0.9", "OTHER").wait == 0.0  # overall: 8 of 10
    guard.failed("ipv4:10.0.1.9", "OTHER2")
    guard.failed("ipv4:10.0.1.10", "OTHER3")
    assert guard.check("ipv4:192.168.0.9", "OTHER").wait == 1.0  # overall spent
    clock.now += 901
    assert guard.check("ipv4:192.168.0.9", "CASE").wait == 0.0


def test_the_store_holds_keyed_hashes_only_and_prunes_old_buckets(
    store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    guard = limits(store, clock)
    guard.failed("ipv4:10.9.8.7", "S5PY1C3ED5WJ")
    clock.now += 3 * 900
    guard.failed("ipv4:10.9.8.6", "S5PY1C3ED5WJ")
    rows = store._reader().execute("SELECT key, bucket FROM guess_failures").fetchall()
    # Three keys (address, case, overall) of the second failure only: the first one's went.
    assert len(rows) == 3 and len({bucket for _, bucket in rows}) == 1
    assert all(len(key) == 16 for key, _ in rows)
    store.close()
    files = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    for clear in (b"10.9.8", b"S5PY1C3ED5WJ", b"s5py1c3ed5wj"):
        assert clear not in files
