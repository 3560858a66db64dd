"""What the store's probing counts (issue 12) add to the match path, as same-run ratios.

A match request that hit nothing pays one ``any(results)``. A request with hits also computes
keyed digests of the hashes that hit (each with its 256 one-bit neighbours) and of its (item,
query) pairs, and records them in one store transaction that returns the key's counts
(``SharedProbes.check``, on a worker thread in the service). Measured here, in process, on a
bank of ``ITEMS`` items of 4 PDQ hashes, for a pipeline request of 64 uploads of 25 PDQ
hashes each (as ``bench/test_guard_cost.py``):

- none hits: ``bank.match`` alone vs ``bank.match`` and the check the service makes;
- one upload in 64 hits (a new re-upload each request, 4 bits from an enrolled hash);
- every upload hits (64 new re-uploads each request: the worst case, a write per upload);

each on SQLite (a data folder) and on PostgreSQL (a throwaway local server, as the tests
start one; skipped without the binaries). Before and after are interleaved round by round.

Writes ``bench/results/probe_cost.md``. Run: ``.venv/bin/python -m pytest
bench/test_probe_cost.py -q -p no:cacheprovider -p no:doctest``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.conftest import filled_bank, random_pdq, report
from matcher.bank import Bank
from matcher.bank.probe_counts import SharedProbes
from matcher.bank.probing import Banding, ProbeLimits
from matcher.principal import Principal
from matcher.records import NewItem, Query
from matcher.signals import PDQ, Hash
from tests.store.postgres_server import PostgresServer, find_binaries

ITEMS = int(os.environ.get("MATCHER_BENCH_PROBE_ITEMS", "2000"))
UPLOADS = 64
ROUNDS = int(os.environ.get("MATCHER_BENCH_PROBE_ROUNDS", "120"))
ME = Principal.operator("bench")
_HEADER = (
    "| backend | request (64 uploads of 25 PDQ hashes) | bank.match | with the probing check "
    "| ratio |\n|---|---|---|---|---|"
)


def _near(h: Hash, rng: np.random.Generator, bits: int = 4) -> Hash:
    value = bytearray(h.value)
    for bit in rng.choice(256, bits, replace=False).tolist():
        value[bit // 8] ^= 1 << (bit % 8)
    return Hash(PDQ, bytes(value), 90)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer | None]:
    bin_dir = find_binaries()
    if bin_dir is None:
        yield None
        return
    server = PostgresServer(bin_dir)
    try:
        yield server
    finally:
        server.stop()


def _requests(items: list[NewItem], hitting: int, rng: np.random.Generator) -> list[list[Query]]:
    """One request per round: 64 fresh uploads, the first ``hitting`` of them holding a new
    re-upload (4 bits away) of an enrolled hash."""
    out = []
    for _ in range(ROUNDS + 10):
        queries = []
        for i in range(UPLOADS):
            hashes = [random_pdq() for _ in range(24 if i < hitting else 25)]
            if i < hitting:
                hashes.append(_near(items[int(rng.integers(len(items)))].hashes[0], rng))
            queries.append(Query(hashes))
        out.append(queries)
    return out


def _measure(bank: Bank, items: list[NewItem], backend: str) -> None:
    rng = np.random.default_rng(12)
    shared = SharedProbes(bank.store, bank.store.secret_key(), ProbeLimits())
    banding = Banding()

    def threshold(signal: object) -> int:
        return banding.threshold(signal)  # type: ignore[arg-type]

    for hitting, label in ((0, "none hits"), (1, "1 upload hits"), (UPLOADS, "every upload hits")):
        requests = _requests(items, hitting, rng)
        spans: dict[str, list[float]] = {"before": [], "after": []}
        for i, queries in enumerate(requests):
            # Interleaved: each round runs the plain match and the checked one, in turn first.
            for name in ("before", "after") if i % 2 else ("after", "before"):
                t = time.perf_counter()
                results = bank.match(queries)
                if name == "after" and any(results):
                    shared.check(1, queries, results, threshold)
                if i >= 10:  # warm-up rounds
                    spans[name].append(time.perf_counter() - t)
            assert sum(bool(r) for r in results) == hitting
        before, after = (sorted(spans[n])[len(spans[n]) // 2] for n in ("before", "after"))
        report(
            "probe_cost",
            _HEADER,
            f"| {backend} | {label} | {before * 1e3:.2f} ms | {after * 1e3:.2f} ms "
            f"| {after / before:.3f} |",
        )


def test_probing_counts_on_the_match_path_sqlite(tmp_path: Path) -> None:
    bank, items = filled_bank(tmp_path / "data", ITEMS)
    try:
        _measure(bank, items, "SQLite")
    finally:
        bank.close()


def test_probing_counts_on_the_match_path_postgres(
    postgres: PostgresServer | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql-15)")
    from matcher.store.crypto import KEY_ENV, Keyring

    monkeypatch.setenv(KEY_ENV, Keyring.generate().text())
    url = postgres.database()
    bank, items = filled_bank(url, ITEMS)
    try:
        _measure(bank, items, "PostgreSQL")
    finally:
        bank.close()
        postgres.drop(url)
