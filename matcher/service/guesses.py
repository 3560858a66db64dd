"""Failed victim guesses, counted in the store so that every replica shares one budget.

A victim call (a case number and its secret instead of an API key) that fails counts one
failure against three keys: the caller's address, the case (its normalised number) and
"all". The counts live in the store (``GuessStore``: time-bucketed rows), so N replicas
behind a load balancer give a guesser the budget of one, not N times it. Costs: one read per
victim call (the three keys' buckets of the window), one write per failed call (and none for
a call that succeeds, so a victim's own calls write nothing).

The window is a sliding one of ``window`` seconds cut into ``BUCKETS`` buckets (a minute each
for the default 15 minutes): a failure leaves the count when its bucket leaves the window,
and ``retry_after`` says when enough of them will have left. Buckets are numbered from the
replica's wall clock (replicas keep their clocks in step, NTP; a skew of seconds moves a
failure by at most one bucket). Buckets older than two windows are deleted by the next
failure.

Only keyed hashes reach the store: HMAC-SHA256 under the store's secret key (the same on
every replica), cut to 16 bytes. A copy of the database shows neither who guessed nor which
case was guessed at; the service's log lines name the address, the store never does.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from matcher.store.base import GuessStore

__all__ = ["BUCKETS", "GuessLimits", "GuessVerdict"]

BUCKETS = 15
"""Buckets per window: the window slides by ``window / BUCKETS`` seconds at a time."""

_DOMAIN = b"matcher.victim-guess.v1\0"


@dataclass(frozen=True, slots=True)
class GuessVerdict:
    """What a victim call must do before its secret is checked."""

    refuse_for: float | None
    """Seconds until the caller's address may try again (refuse now), or None."""
    wait: float
    """Seconds to wait before checking (the case's or the overall backoff); 0 for none."""


class GuessLimits:
    """The three failure budgets of victim calls, counted in ``store``.

    - per address: ``failures`` within ``window`` seconds, then refused until enough of them
      age out (only the address's own failures count against it);
    - per case, the same bound, and over all cases ``overall``: past them, calls *wait*
      (doubling per failure past the bound, at most ``backoff`` seconds), never refused, so
      a stranger who knows a case number can slow its victim by seconds, never lock them out.
    """

    def __init__(
        self,
        store: GuessStore,
        secret_key: bytes,
        *,
        failures: int,
        window: float,
        overall: int,
        backoff: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._secret = secret_key
        self.failures = failures
        self.overall = overall
        self.backoff = backoff
        self.bucket_seconds = max(1.0, window / BUCKETS)
        self.buckets = max(1, math.ceil(window / self.bucket_seconds))
        self._clock = clock

    def _key(self, kind: str, value: str) -> bytes:
        message = _DOMAIN + kind.encode() + b"\0" + value.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]

    def _keys(self, peer: str, case: str) -> tuple[bytes, bytes, bytes]:
        return self._key("peer", peer), self._key("case", case), self._key("all", "")

    def _backoff(self, count: int, budget: int) -> float:
        if count < budget:
            return 0.0
        return float(min(self.backoff, 2.0 ** min(count - budget, 16)))

    def check(self, peer: str, case: str) -> GuessVerdict:
        """Read the three counts (one store read) and say what this call must do."""
        now = self._clock()
        current = int(now // self.bucket_seconds)
        peer_key, case_key, all_key = self._keys(peer, case)
        counts = self._store.guess_failures(
            [peer_key, case_key, all_key], since=current - self.buckets + 1
        )
        mine = counts.get(peer_key, {})
        excess = sum(mine.values()) - self.failures + 1
        if excess > 0:
            # Refused until ``excess`` failures have left the window, oldest bucket first.
            for bucket in sorted(mine):
                excess -= mine[bucket]
                if excess <= 0:
                    leaves = (bucket + self.buckets) * self.bucket_seconds
                    return GuessVerdict(max(1.0, leaves - now), 0.0)
        wait = max(
            self._backoff(sum(counts.get(case_key, {}).values()), self.failures),
            self._backoff(sum(counts.get(all_key, {}).values()), self.overall),
        )
        return GuessVerdict(None, wait)

    def failed(self, peer: str, case: str) -> None:
        """Count one failed call (one store write), pruning buckets older than two windows."""
        current = int(self._clock() // self.bucket_seconds)
        self._store.add_guess_failure(
            list(self._keys(peer, case)),
            bucket=current,
            prune_before=current - 2 * self.buckets,
        )
