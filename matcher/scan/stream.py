"""Batches of queries through ``StreamMatch``, with bounded in-flight work and retries.

The service answers each stream message with one message, in order. So the batches sent but
not yet answered are exactly a queue's head: when the stream breaks (``UNAVAILABLE``,
``RESOURCE_EXHAUSTED``), a new stream re-sends exactly those, then carries on. Nothing is
answered twice, nothing is lost.

Three threads meet here: a producer (pulls the caller's batches, which may mean hashing
images), gRPC's request thread (sends), and the caller's thread (reads answers). One condition
variable guards the two queues between them: ``ready`` (made, not sent) and ``unanswered``
(sent, or about to be sent, not answered).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from matcher.client import Client
from matcher.errors import RateLimited, Unavailable
from matcher.records import Query, QueryResult

__all__ = ["RetryPolicy", "match_batches"]

B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a broken stream again, and when to give up.

    ``UNAVAILABLE`` (and deadline) failures back off exponentially from ``initial`` to
    ``maximum`` seconds with +-20% jitter (so that many workers do not come back at once), and
    the job gives up after ``attempts`` failures in a row with no answer in between.
    ``RESOURCE_EXHAUSTED`` waits what the server asked for (``retry_after``) and never counts
    towards giving up: the server is up, it is pacing us.
    """

    attempts: int = 10
    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, failures: int, exc: Exception) -> float:
        if isinstance(exc, RateLimited):
            return max(exc.retry_after, 0.05) * random.uniform(1.0, 1.2)
        base = min(self.maximum, self.initial * 2 ** max(0, failures - 1))
        return base * random.uniform(0.8, 1.2)


class _Feed(Generic[B]):
    """The queues between the producer, the sender and the reader (see the module docstring)."""

    def __init__(self, batches: Iterable[B], *, in_flight: int, ready_max: int) -> None:
        self._cond = threading.Condition()
        self._ready: deque[B] = deque()
        self._unanswered: deque[B] = deque()
        self._in_flight = in_flight
        self._ready_max = ready_max
        self._generation = 0
        self._exhausted = False
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._produce, args=(iter(batches),), name="matcher-scan-producer", daemon=True
        )
        self._thread.start()

    def _produce(self, batches: Iterator[B]) -> None:
        try:
            for batch in batches:
                with self._cond:
                    while len(self._ready) >= self._ready_max and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    self._ready.append(batch)
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the reader, which raises it
            self.error = exc
        finally:
            with self._cond:
                self._exhausted = True
                self._cond.notify_all()
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stop the producer's own work (e.g. its process pool) promptly

    def restart(self) -> tuple[int, list[B]]:
        """Start a new stream: returns its generation and the batches it must re-send first."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            return self._generation, list(self._unanswered)

    def requests(self, generation: int, resend: list[B]) -> Iterator[B]:
        """What one stream sends: the re-sends, then new batches until the producer is done."""
        yield from resend
        while True:
            with self._cond:
                while not self._stale(generation) and not (
                    (self._ready and len(self._unanswered) < self._in_flight)
                    or (self._exhausted and not self._ready)
                ):
                    self._cond.wait()
                if self._stale(generation) or not self._ready:
                    return  # superseded by a newer stream, or nothing more to send
                batch = self._ready.popleft()
                # In ``unanswered`` from the moment it leaves ``ready``: if this stream dies
                # before sending it, the next one re-sends it.
                self._unanswered.append(batch)
                self._cond.notify_all()
            yield batch

    def _stale(self, generation: int) -> bool:
        return self._closed or generation != self._generation

    def answered(self) -> B:
        with self._cond:
            batch = self._unanswered.popleft()
            self._cond.notify_all()
            return batch

    def finished(self) -> bool:
        with self._cond:
            return self._exhausted and not self._ready and not self._unanswered

    def close(self, wait: float = 10.0) -> None:
        """Stop the producer, and give it ``wait`` seconds to wind down its own work (a
        process pool finishing its window) before the caller moves on or exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(wait)


def match_batches(
    client: Client,
    batches: Iterable[B],
    queries: Callable[[B], list[Query]],
    *,
    in_flight: int = 4,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> Iterator[tuple[B, list[QueryResult]]]:
    """Send each batch's queries through ``StreamMatch``; yield ``(batch, results)`` in order.

    At most ``in_flight`` batches are unanswered at a time, and at most as many more are made
    ahead, so memory stays flat however long ``batches`` is. ``batches`` is consumed in a
    thread of its own (it may be slow: hashing). A batch must have at least one query.
    Broken streams are retried by ``retry`` (see ``RetryPolicy``); other errors
    (authentication, bad input) are raised at once.
    """
    retry = retry or RetryPolicy()
    feed: _Feed[B] = _Feed(batches, in_flight=in_flight, ready_max=in_flight)
    failures = 0
    try:
        while True:
            generation, resend = feed.restart()
            try:
                stream = client.stream_match(queries(b) for b in feed.requests(generation, resend))
                for results in stream:
                    batch = feed.answered()
                    failures = 0
                    yield batch, results
                if feed.error is not None:
                    raise feed.error
                if feed.finished():
                    return
                # The server closed the stream cleanly with work outstanding (shutting down).
                raise Unavailable("the stream ended before every batch was answered")
            except (Unavailable, RateLimited) as exc:
                if not isinstance(exc, RateLimited):
                    failures += 1
                    if failures > retry.attempts:
                        raise
                wait = retry.delay(failures, exc)
                if on_retry is not None:
                    on_retry(exc, wait)
                sleep(wait)
    finally:
        feed.close()
