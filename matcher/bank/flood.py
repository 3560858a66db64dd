"""Flood control: quarantine an item whose match rate jumps far above its own history and the
bank's norm (a benign viral picture was enrolled, by mistake or to poison the bank).

How it runs. Each replica counts, in memory, the uploads (queries) that returned each item: one
dict increment per result on the match path, no store write. Every ``flush_seconds`` a
background thread (never the event loop) adds its counts to the store's ``match_counts`` (one
row per item per hour), then evaluates the rule for the items it flushed against the store's
counts, which hold every replica's matches, and quarantines (reason ``flood``) those over the
bound. A quarantined item stops matching at once on every replica (``active_items``).

The rule (``is_flood``, a pure function) over hour buckets (hours since the epoch):

- ``window``: the uploads of the last hour, as a sliding window: this hour's count plus the
  previous hour's, weighted by the part of it still inside the last 60 minutes;
- ``baseline``: the item's own mean per hour over the ``history_hours`` before that (hours
  with no match count as 0);
- ``norm``: the bank's mean uploads per (item, hour) over the same hours, over items that had
  matches (what a matched item usually sees).

It is a flood when ``window >= floor`` **and** ``window > history_factor * max(baseline, 1)``
**and** ``window > norm_factor * max(norm, 1)``: far above its own history, above the bank's
norm, and above an absolute floor.

Why these defaults (``FloodRule()``). A victim's image re-uploaded in a wave looks like dozens
to a few hundred uploads a day on one or a few platforms, in bursts of tens per hour: its worst
hour stays well under 200. A benign viral picture is matched thousands of times an hour across
many partners. The floor (500 per hour) sits 2.5x above the worst victim hour we expect and
below the first hour of a viral picture, so the victim's wave can never trip the rule however
quiet the item was before (its own history is near zero, so the floor is what protects it);
the history and norm factors (10x) stop a steadily popular item, or a bank whose every item is
busy, from being flagged by the floor alone.

An item a practitioner restored after review is exempt from flood control from then on (the
store refuses a flood quarantine for a reviewed item): a practitioner said it is the victim's
image, and a flood of matches on a real victim's image is the spread the bank exists to stop.
Reports by partners still quarantine it again (verdicts given after the review count).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matcher.records import QuarantineReason

if TYPE_CHECKING:
    from matcher.store import Store

__all__ = ["FloodControl", "FloodRule", "hour_bucket", "is_flood", "window_count"]

log = logging.getLogger("matcher.flood")


@dataclass(frozen=True, kw_only=True, slots=True)
class FloodRule:
    """The flood rule's bounds (``matcher serve --flood-*``; see the module docstring)."""

    enabled: bool = True
    """Off: nothing is counted or flushed."""
    floor: int = 500
    """Uploads in the last hour below which an item is never a flood."""
    history_factor: float = 10.0
    """How far above its own mean per hour an item's last hour must be."""
    norm_factor: float = 10.0
    """How far above the bank's mean per matched item and hour."""
    history_hours: int = 24
    """Hours of history (before the last hour) for the item's baseline and the bank's norm."""
    flush_seconds: float = 5.0
    """How often a replica adds its counts to the store and evaluates the rule."""


def hour_bucket(at: float) -> int:
    """The hour bucket (hours since the epoch) of a Unix time."""
    return int(at // 3600)


def window_count(counts: Mapping[int, int], now: float) -> float:
    """Uploads in the 60 minutes before ``now``, from hour buckets: this hour's count plus the
    previous hour's, weighted by the part of that hour still inside the window."""
    bucket = hour_bucket(now)
    inside = 1.0 - (now - bucket * 3600) / 3600
    return counts.get(bucket, 0) + counts.get(bucket - 1, 0) * inside


def is_flood(window: float, history: Sequence[int], norm: float, rule: FloodRule) -> bool:
    """True when ``window`` (uploads in the last hour) is a flood for an item whose previous
    ``rule.history_hours`` hours held ``history`` (per hour; missing hours are 0) in a bank
    whose norm per matched item and hour is ``norm``.

    >>> rule = FloodRule()
    >>> is_flood(3000, [0] * 24, 1.5, rule)   # a viral picture's first hour
    True
    >>> is_flood(60, [0] * 24, 1.5, rule)     # a victim's wave at its peak hour
    False
    >>> is_flood(3000, [800] * 24, 1.5, rule)  # steadily this busy: not a jump
    False
    """
    if window < rule.floor:
        return False
    baseline = sum(history) / max(rule.history_hours, 1)
    return window > rule.history_factor * max(baseline, 1.0) and window > rule.norm_factor * max(
        norm, 1.0
    )


class FloodControl:
    """The per-replica counts and the flush-and-evaluate loop. Safe to share between threads.

    ``count`` is what the match path calls (one dict increment per matched item); ``flush``
    runs on the background thread that ``start`` makes (or by hand in tests and tools).
    """

    def __init__(self, store: Store, rule: FloodRule | None = None) -> None:
        self._store = store
        self.rule = rule or FloodRule()
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = 0
        """Flushes that wrote counts (for metrics)."""
        self.quarantined = 0
        """Items this replica quarantined for a flood."""
        self._trimmed_at: int | None = None

    def count(self, item_ids: Iterable[int]) -> None:
        """Count one upload for each item of ``item_ids`` (one query's matched items)."""
        if not self.rule.enabled:
            return
        with self._lock:
            counts = self._counts
            for item in item_ids:
                counts[item] = counts.get(item, 0) + 1

    def pending(self) -> dict[int, int]:
        """The counts not flushed yet (a copy)."""
        with self._lock:
            return dict(self._counts)

    def flush(self, now: float | None = None) -> list[int]:
        """Add this replica's counts to the store, evaluate the rule for those items, and
        quarantine the floods; return the ids quarantined now. On a store error the counts
        are put back, to go with the next flush."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, {}
            if not counts:
                return []
            now = time.time() if now is None else now
            bucket = hour_bucket(now)
            try:
                self._store.add_match_counts(bucket, counts)
            except Exception:
                with self._lock:
                    for item, n in counts.items():
                        self._counts[item] = self._counts.get(item, 0) + n
                raise
            self.flushes += 1
            quarantined = self._evaluate(list(counts), now)
            if bucket != self._trimmed_at:
                # Once an hour per replica: the rule reads ``history_hours`` back from the hour
                # before this one, so older buckets are dead weight.
                try:
                    self._store.trim_match_counts(bucket - 1 - self.rule.history_hours)
                    self._trimmed_at = bucket
                except Exception:  # the counts went in; the trim is tried again next flush
                    log.exception("flood control: trimming old match counts failed")
            return quarantined

    def _evaluate(self, item_ids: Sequence[int], now: float) -> list[int]:
        rule = self.rule
        bucket = hour_bucket(now)
        start = bucket - 1 - rule.history_hours
        held = self._store.match_counts(item_ids, start)
        suspects = [
            (item, window)
            for item in item_ids
            if (window := window_count(held.get(item, {}), now)) >= rule.floor
        ]
        if not suspects:
            return []
        norm = self._store.match_norm(start, bucket - 1)
        out = []
        for item, window in suspects:
            mine = held.get(item, {})
            history = [mine.get(b, 0) for b in range(start, bucket - 1)]
            if not is_flood(window, history, norm, rule):
                continue
            if self._store.quarantine_item(item, QuarantineReason.FLOOD, matches=int(window)):
                self.quarantined += 1
                out.append(item)
                log.warning(
                    "flood control: item id %d quarantined (%d uploads in the last hour)",
                    item,
                    int(window),
                )
        return out

    def start(self) -> None:
        """Flush every ``rule.flush_seconds`` on a daemon thread until ``stop``."""
        if self._thread is not None or not self.rule.enabled:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(self.rule.flush_seconds):
                try:
                    self.flush()
                except Exception:  # the store may be down for a while: keep counting
                    log.exception("flood control: flush failed; retrying")

        self._thread = threading.Thread(target=run, name="matcher-flood", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and flush what is left (best effort)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(10)
        try:
            self.flush()
        except Exception:
            log.exception("flood control: last flush failed")
