"""Flood control (issue 11, item 3): a benign flood is quarantined, a victim's wave is not.

The pure rule at the shipped defaults over the two shapes, hour by hour; then both against a
real server with small configured bounds (the same rule, scaled down so a test sends dozens of
uploads, not thousands).

The victim's wave, as written down here (what helplines describe: one person's image posted
again and again on one or a few platforms): over a week, 40-300 uploads a day, in bursts of
10-60 in one hour separated by quiet hours, two or three bursts a day, the first day the
busiest. A benign viral picture: thousands of uploads an hour across many partners, from its
first hour on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from matcher.bank.flood import FloodRule, hour_bucket, is_flood, window_count
from matcher.principal import Principal
from matcher.records import NewItem, QuarantineReason, Query
from matcher.service import ServerConfig
from tests.service_fixtures import Running, random_pdq, start_server, stop_server

NORM = 2.0  # a matched item's usual uploads per hour in a bank (most see one or two)


def victim_wave(rng: np.random.Generator, days: int = 7) -> list[int]:
    """Uploads per hour of one victim's image over ``days`` days (see the module docstring)."""
    hours = [0] * (24 * days)
    for day in range(days):
        bursts = int(rng.integers(2, 4))
        top = 60 if day == 0 else 40
        for _ in range(bursts):
            hour = day * 24 + int(rng.integers(0, 24))
            hours[hour] += int(rng.integers(10, top + 1))
    return hours


def flagged_hours(series: list[int], rule: FloodRule, norm: float = NORM) -> list[int]:
    """The hours at which the rule (evaluated at each hour's end) calls ``series`` a flood."""
    out = []
    for h, count in enumerate(series):
        history = series[max(0, h - 1 - rule.history_hours) : max(0, h - 1)]
        history = [0] * (rule.history_hours - len(history)) + history
        # At an hour's end the sliding window is that hour alone.
        if is_flood(count, history, norm, rule):
            out.append(h)
    return out


def test_the_default_rule_spares_a_victims_wave(rng: np.random.Generator) -> None:
    rule = FloodRule()
    for _ in range(200):  # 200 victims' weeks
        wave = victim_wave(rng)
        assert max(wave) <= 120 and sum(wave[:24]) <= 300
        assert flagged_hours(wave, rule) == []
    # Even a wave far worse than described (200 uploads in one hour, from nothing) is spared:
    # the floor is 500 uploads in the last hour.
    assert flagged_hours([0] * 30 + [200], rule) == []


def test_the_default_rule_stops_a_benign_flood_in_its_first_hour() -> None:
    rule = FloodRule()
    assert flagged_hours([0] * 30 + [3000, 5000], rule) == [30, 31]
    # A slower viral spread is stopped in the hour it passes the floor.
    assert flagged_hours([0] * 30 + [50, 200, 700, 2000], rule)[0] == 32
    # An item steadily this busy for a day is not a jump (its own history: its first hours
    # were, and a practitioner restoring it made it exempt), nor is a bank whose every
    # matched item is busy (the norm).
    assert 30 not in flagged_hours([800] * 30 + [1500], rule)
    assert flagged_hours([0] * 30 + [3000], rule, norm=400.0) == []


def test_the_window_slides_over_the_hour_boundary() -> None:
    now = 1_000 * 3600 + 900.0  # a quarter into hour 1000
    counts = {999: 400, 1000: 200}
    assert window_count(counts, now) == 200 + 400 * 0.75
    assert hour_bucket(now) == 1000


# -- against a real server

SMALL = FloodRule(floor=20, history_factor=4, norm_factor=2, history_hours=24, flush_seconds=0.1)
"""The rule with small bounds: 20 uploads in an hour, 4x the item's own mean, 2x the norm."""


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Running]:
    config = ServerConfig(address="127.0.0.1:0", metrics_address="127.0.0.1:0", flood=SMALL)
    running, thread = start_server(tmp_path / "data", config)
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        stop_server(running, thread)


def _uploads(running: Running, role: str, item: NewItem, n: int) -> int:
    """``n`` uploads of ``item`` (one query each, as a partner sends them); how many matched."""
    with running.client(role) as partner:
        results = partner.match([Query(item.hashes) for _ in range(n)])
    return sum(bool(r.matches) for r in results)


def _settled(running: Running) -> None:
    """Wait until this replica's counts are flushed and evaluated (two flushes)."""
    flood = running.bank.flood
    deadline = time.monotonic() + 10
    while flood.pending():
        assert time.monotonic() < deadline, "flood control never flushed"
        time.sleep(0.05)
    start = flood.flushes
    running.bank.flood.count([])  # nothing new: just let one more period pass
    time.sleep(SMALL.flush_seconds * 3)
    assert flood.flushes >= start


def test_a_benign_flood_is_quarantined_while_a_victims_wave_is_not(
    guarded: Running, rng: np.random.Generator
) -> None:
    viral, victim, popular = (NewItem([random_pdq(rng)]) for _ in range(3))
    case, _ = guarded.enroll([viral, victim, popular])
    store = guarded.bank.store
    record = store.get_case(case.number)
    assert record is not None
    ids = {i.number: i.id for i in store.list_items(record.id)}
    # The popular item has been matched 20 times an hour for the last day: 60 now is 3x its
    # own mean, not a jump (the rule wants 4x).
    now_bucket = hour_bucket(time.time())
    for bucket in range(now_bucket - 25, now_bucket - 1):
        store.add_match_counts(bucket, {ids[3]: 20})
    # The victim's wave, scaled to the small floor: three bursts of 5 uploads (15 < 20).
    for _ in range(3):
        assert _uploads(guarded, "partner", victim, 5) == 5
        _settled(guarded)
    # The viral picture: 60 uploads from two partners within the hour; the popular item 60.
    assert _uploads(guarded, "partner", viral, 30) == 30
    assert _uploads(guarded, "exact", viral, 30) == 30
    assert _uploads(guarded, "partner", popular, 60) == 60
    deadline = time.monotonic() + 10
    while _uploads(guarded, "partner", viral, 1):
        assert time.monotonic() < deadline, "the flood was never quarantined"
        time.sleep(0.05)
    _settled(guarded)
    assert _uploads(guarded, "partner", victim, 1) == 1  # the victim stays protected
    assert _uploads(guarded, "partner", popular, 1) == 1
    with guarded.client("practitioner") as practitioner:
        [entry] = practitioner.review_queue()
        assert entry.number == 1 and entry.quarantine.reason is QuarantineReason.FLOOD
        assert entry.quarantine.matches >= 60
        assert "uploads within an hour" in entry.quarantine.description
        # Restored after review, it is exempt from flood control from then on.
        practitioner.review_item(case.number, 1, "restore")
    assert _uploads(guarded, "partner", viral, 40) == 40
    _settled(guarded)
    assert _uploads(guarded, "partner", viral, 1) == 1
    entries = guarded.bank.audit_log(by=Principal.operator("t"), case=case.number)
    [row] = [e for e in entries if e.action == "item.quarantine"]
    assert row.detail["reason"] == "flood" and row.actor == "operator"
    assert guarded.bank.flood.quarantined == 1


def test_flood_control_trims_the_counts_it_no_longer_reads(tmp_path: Path) -> None:
    """Once an hour a replica deletes the buckets older than the rule's history: the table holds
    about ``history_hours`` rows per matched item, not one per item per hour for ever."""
    from matcher.bank.flood import FloodControl
    from matcher.signals import MD5, Hash
    from matcher.store import SQLiteStore

    with SQLiteStore(tmp_path / "data") as store:
        org = store.create_organisation("Helpline", actor=Principal.operator("test"))
        case = store.create_case(
            org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=Principal.operator("t")
        )
        (item,) = store.add_items(
            case.id, [NewItem([Hash(MD5, bytes(16))])], actor=Principal.operator("t")
        ).items
        flood = FloodControl(store, FloodRule(history_hours=3))
        start = 1_000 * 3600.0
        for hour in range(10):
            flood.count([item.id])
            flood.flush(now=start + hour * 3600)
        held = store.match_counts([item.id], 0)[item.id]
        # The last flush (hour 1009) keeps what the rule reads: hours 1005 (= 1009 - 1 - 3) on.
        assert sorted(held) == [1005, 1006, 1007, 1008, 1009]
