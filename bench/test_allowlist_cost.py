"""What the allowlist costs on the match path: ``make bench`` (or ``pytest bench -k allowlist``).

The bank of real ``enroll``-profile views (``bench.views_cache``: half the cached photos, one
item each) padded with random PDQ codes in items of 200 up to ``MATCHER_BENCH_ALLOW_HASHES``
(default 200,000); uploads are the cached query uploads of every cached photo (about half hits,
half misses: a miss asks nothing more). ``Bank.match`` in batches of 50 uploads, timed in
alternating rounds in the same run with:

- **none**: an allowlist holding no entry (the path as before the allowlist but one call per
  signal group);
- **seed**: the generated seed (149 entries), as shipped;
- **seed + 10k**: the seed and 10,000 more PDQ entries (a large operator list).

Writes ``bench/results/allowlist.md`` with the median seconds per batch and each ratio to
**none**.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import pytest

from bench.conftest import report
from bench.views_cache import cached, enrolled, uploads
from matcher.bank import Bank
from matcher.bank.allowlist import Allowlist
from matcher.principal import Principal, Role
from matcher.records import AllowlistSource, NewItem, Query
from matcher.signals import PDQ, PHASH, Hash

_HASHES = int(os.environ.get("MATCHER_BENCH_ALLOW_HASHES", 200_000))
_BATCH = 50
_ROUNDS = 7


def test_allowlist_cost_on_the_match_path() -> None:
    photos = cached()
    if len(photos) < 40:
        pytest.skip("run python -m bench.views_cache first (at least 40 photos cached)")
    rng = np.random.default_rng(7)
    me = Principal.operator("bench")
    with tempfile.TemporaryDirectory() as folder, Bank.open(folder) as bank:
        org = bank.accounts.create_organisation("Helpline", by=me)
        who = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
        case = bank.create_case(by=who)
        held = photos[::2]
        items = [NewItem([Hash(PDQ, c.tobytes(), 100) for c in codes]) for codes in enrolled(held)]
        total = sum(len(i.hashes) for i in items)
        while total < _HASHES:
            codes = rng.integers(0, 256, (200, 32), dtype=np.uint8)
            items.append(NewItem([Hash(PDQ, c.tobytes(), 90) for c in codes]))
            total += 200
        for start in range(0, len(items), 100):
            bank.enroll(case.number, items[start : start + 100], by=who)
        queries = [
            Query([*(Hash(PDQ, c.tobytes(), 100) for c in pdq), Hash(PHASH, phash)])
            for pdq, phash in uploads(photos)
        ]
        batches = [queries[i : i + _BATCH] for i in range(0, len(queries), _BATCH)]
        seeded = bank.allowlist
        empty = Allowlist(bank.store)  # never loaded: holds no entry
        big_folder = tempfile.mkdtemp()
        with Bank.open(big_folder, load=False) as other:
            other.load()  # the seed
            extra = [
                Hash(PDQ, c.tobytes(), 90) for c in rng.integers(0, 256, (10_000, 32), np.uint8)
            ]
            other.store.add_allowlist_entries(
                extra, label="bench", source=AllowlistSource.ADMIN, actor=me
            )
            big = Allowlist(other.store)
            big.reload()
        variants = {"none": empty, "seed": seeded, "seed + 10k": big}
        matched = {}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(_ROUNDS):
            for name, allowlist in variants.items():
                bank.allowlist = allowlist
                started = time.perf_counter()
                results = [bank.match(b) for b in batches]
                times[name].append((time.perf_counter() - started) / len(batches))
                matched[name] = sum(len(m) for r in results for m in r)
        bank.allowlist = seeded
    base = statistics.median(times["none"])
    header = (
        f"Allowlist cost on Bank.match ({total:,} hashes, {len(queries)} uploads in batches of "
        f"{_BATCH}, median of {_ROUNDS} alternating rounds)\n\n"
        "| allowlist | s per batch | ratio to none | matches |\n|---|---|---|---|"
    )
    for name in variants:
        median = statistics.median(times[name])
        report(
            "allowlist",
            header,
            f"| {name} | {median:.4f} | {median / base:.3f} | {matched[name]} |",
        )
    # Real uploads of real photos are not near the seed: nothing they match is suppressed.
    assert matched["seed"] == matched["none"]
