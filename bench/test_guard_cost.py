"""What issue 11 adds to the match path, as same-run ratios (bank in process, SQLite).

Two changes touch it: flood control counts the uploads that returned each item (a dict
increment per result, under a lock, only when there are results), and the store check of the
candidates (``active_items``) also excludes quarantined items (a primary-key probe of
``quarantines`` per candidate). Measured here:

- ``bank.match`` of a batch of uploads (25 random PDQ hashes each, one in two also holding a
  hash of an enrolled item, so half of them return a match), with flood control counting vs
  switched off (``FloodRule(enabled=False)``), on the same bank;
- the candidate check with the shipped SQL vs the SQL before issue 11 (no quarantine clause),
  on the same connection and ids, with one candidate in ten quarantined.

Writes ``bench/results/guard_cost.md``. Run: ``.venv/bin/python -m pytest bench/test_guard_cost.py
-q -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.conftest import filled_bank, random_pdq, report
from matcher.bank import Bank
from matcher.bank.flood import FloodRule
from matcher.principal import Principal
from matcher.records import NewItem, QuarantineReason, Query

ITEMS = int(os.environ.get("MATCHER_BENCH_GUARD_ITEMS", "2000"))
UPLOADS = 64
ME = Principal.operator("bench")
_HEADER = "| measure | before | after | after / before |\n|---|---|---|---|"


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bank, list[NewItem]]]:
    bank, items = filled_bank(Path(tmp_path_factory.mktemp("guard")) / "data", ITEMS)
    yield bank, items
    bank.close()


def _uploads(items: list[NewItem]) -> list[Query]:
    out = []
    for i in range(UPLOADS):
        hashes = [random_pdq() for _ in range(24)]
        if i % 2 == 0:
            hashes.append(items[(i * 7) % len(items)].hashes[0])
        out.append(Query(hashes))
    return out


def test_flood_counting_on_the_match_path(bank: tuple[Bank, list[NewItem]]) -> None:
    b, items = bank
    queries = _uploads(items)
    assert sum(bool(r) for r in b.match(queries)) == UPLOADS // 2
    # Interleaved rounds, so the machine's load falls on both alike.
    rules = {"off": FloodRule(enabled=False), "on": FloodRule()}
    rounds: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(420):
        for name, rule in rules.items():
            b.flood.rule = rule
            t = time.perf_counter()
            b.match(queries)
            if i >= 20:  # warm-up rounds
                rounds[name].append(time.perf_counter() - t)
    timings = {name: sorted(r)[len(r) // 2] for name, r in rounds.items()}
    assert b.flood.pending()  # it did count
    b.flood.flush()
    report(
        "guard_cost",
        _HEADER,
        f"| bank.match, {UPLOADS} uploads of 25 hashes, half hit, {ITEMS} items "
        f"(flood counting off / on) | {timings['off'] * 1e3:.2f} ms | "
        f"{timings['on'] * 1e3:.2f} ms | {timings['on'] / timings['off']:.3f} |",
    )


def test_the_candidate_check_with_quarantines(bank: tuple[Bank, list[NewItem]]) -> None:
    b, _ = bank
    store = b.store
    ids = [i.id for i in store.list_items(1)]
    for item_id in ids[::10]:
        store.quarantine_item(item_id, QuarantineReason.FLOOD, matches=1)
    candidates = ids[:: max(1, len(ids) // 32)][:32]
    conn = store._reader()  # type: ignore[attr-defined]
    before = (
        "SELECT id FROM items WHERE id IN (SELECT value FROM json_each(?)) AND state = 'active'"
    )

    def old() -> set[int]:
        return {r[0] for r in conn.execute(before, (json.dumps(candidates),)).fetchall()}

    def new() -> set[int]:
        return store.active_items(candidates)

    assert new() < old()
    spans: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(2050):
        for name, fn in (("before", old), ("after", new)):
            t = time.perf_counter()
            fn()
            if i >= 50:
                spans[name].append(time.perf_counter() - t)
    timings = {name: sorted(r)[len(r) // 2] for name, r in spans.items()}
    report(
        "guard_cost",
        _HEADER,
        f"| active_items, {len(candidates)} candidates, 1 in 10 quarantined | "
        f"{timings['before'] * 1e6:.1f} us | {timings['after'] * 1e6:.1f} us | "
        f"{timings['after'] / timings['before']:.3f} |",
    )
