"""Token buckets, keyed by whoever is being limited (an API key, a peer address, a case).

One bucket per key holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a
request costs tokens (a batch of 1,000 queries costs 1,000). When a bucket is short, the caller
learns how long until it would not be (``RateLimited.retry_after``, sent as ``RetryInfo``).
Everything runs on the event loop's thread, so no lock is needed; idle buckets are dropped so
memory stays bounded however many peers come and go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from matcher.errors import RateLimited

__all__ = ["Limiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class Limiter:
    """Per-key token buckets.

    >>> limiter = Limiter(rate=1.0, burst=2, clock=lambda: 0.0)
    >>> limiter.take("k"); limiter.take("k")
    >>> limiter.take("k")
    Traceback (most recent call last):
    ...
    matcher.errors.RateLimited: rate limit exceeded
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[object, _Bucket] = {}

    def _bucket(self, key: object, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def _evict(self, now: float) -> None:
        # A bucket that would be full again is indistinguishable from a new one: drop those.
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.stamp < full_after}
        if len(self._buckets) >= self._max_keys:  # all busy: drop the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1].stamp)
            self._buckets = dict(keep[len(keep) // 2 :])

    def check(self, key: object, cost: float = 1.0) -> None:
        """Raise ``RateLimited`` if ``cost`` tokens are not available, without taking them."""
        bucket = self._bucket(key, self._clock())
        if bucket.tokens < min(cost, self.burst):
            raise RateLimited(
                "rate limit exceeded",
                retry_after=(min(cost, self.burst) - bucket.tokens) / self.rate,
            )

    def take(self, key: object, cost: float = 1.0) -> None:
        """Take ``cost`` tokens, or raise ``RateLimited`` (and take nothing).

        A cost above ``burst`` is allowed when the bucket is full (it then goes negative and
        the caller waits longer next time), so a large batch is slowed, never refused forever.
        """
        self.check(key, cost)
        self._buckets[key].tokens -= cost

    def spend(self, key: object, cost: float = 1.0) -> None:
        """Take ``cost`` tokens without checking (e.g. to count a failure after the fact)."""
        self._bucket(key, self._clock()).tokens -= cost
