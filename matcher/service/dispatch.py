"""Matching off the event loop, on every core: concurrent requests gathered into one search.

Why: a search of one upload (about 25 PDQ hashes) costs 1.7-2 ms of index kernel at 1M stored
hashes. Run inline on the asyncio event loop, it blocks every other call meanwhile and leaves the
other cores idle (issue 15 measured 1.05 of 2 cores busy). Handing each request to a thread pool
costs a thread hop per request and a ``Bank.match`` call per request (grouping, one store check).

So the dispatcher keeps ``workers`` searches in flight (one per core by default), each on its own
thread, and every request that arrives while they are all busy waits in a queue; when a worker
frees up, it takes the whole queue (up to ``batch_hashes`` hashes) as ONE ``Bank.match`` call:
one index search per signal type for all those uploads, one store check, one thread hop. This is
natural batching: an idle server adds no delay at all (a lone request starts at once), and the
busier it gets, the bigger the batches and the less each request costs. The event loop only
converts messages and answers.

Results are exactly what ``Bank.match`` gives each request alone: it answers every query on its
own (the store check reads after the search, per batch). A batch that fails is retried request
by request, so one request's error never becomes another's.

A request may bring a follow-up (``match_then``): a function of its own results that the
worker runs right after the batch's search, before handing back (the servicer records a
request's hits in the store's probing counts there). That is one thread hop per request, not
two: each hop costs a queue put, a wake-up of the event loop through its self-pipe and a loop
iteration, all holding the GIL. A follow-up that fails fails its own request only.

>>> import asyncio
>>> async def demo() -> list[list[int]]:
...     dispatcher = MatchDispatcher(lambda queries: [[len(q)] for q in queries], workers=2)
...     try:
...         return await dispatcher.match(["ab", "c"])
...     finally:
...         dispatcher.close()
>>> asyncio.run(demo())
[[2], [1]]
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["MatchDispatcher"]

Q = TypeVar("Q")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(slots=True)
class _Request(Generic[Q, R]):
    queries: Sequence[Q]
    size: int
    future: asyncio.Future[Any]
    then: Callable[[list[R]], Any] | None = None
    alone: bool = field(default=False)


class MatchDispatcher(Generic[Q, R]):
    """Runs ``match(queries) -> one result per query`` for asyncio callers (see module doc).

    ``workers``: searches in flight at once, each on its own thread (None: one per core; 0:
    inline on the event loop, as one upload's match ran before issue 15, kept for
    comparison). ``size`` gives a request's weight (its number of hashes) for
    ``batch_hashes``, the most a gathered batch holds (a larger request runs alone). Use from
    one event loop.
    """

    def __init__(
        self,
        match: Callable[[Sequence[Q]], list[R]],
        *,
        workers: int | None = None,
        batch_hashes: int = 2048,
        size: Callable[[Sequence[Q]], int] = len,
    ) -> None:
        self._match = match
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        if self.workers < 0:
            raise ValueError("workers must be 0 or more")
        self.batch_hashes = batch_hashes
        self._size = size
        self._executor = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="matcher-match")
            if self.workers
            else None
        )
        self._queue: deque[_Request[Q, R]] = deque()
        self._busy = 0
        self.batches = 0
        """Batches run so far (for tests and benchmarks: requests / batches is the gathering)."""

    @property
    def in_flight(self) -> int:
        """Searches running now (read from any thread: a hint, not a lock)."""
        return self._busy

    async def match(self, queries: Sequence[Q]) -> list[R]:
        """One result per query, as ``match(queries)`` would give."""
        if self._executor is None:
            self.batches += 1
            return self._match(queries)
        loop = asyncio.get_running_loop()
        request: _Request[Q, R] = _Request(queries, self._size(queries), loop.create_future())
        self._queue.append(request)
        self._pump(loop)
        results: list[R] = await request.future
        return results

    async def match_then(
        self, queries: Sequence[Q], then: Callable[[list[R]], T]
    ) -> tuple[list[R], T]:
        """``match(queries)``'s results and ``then(results)``, run on the worker thread that
        searched (inline: on a thread of the loop's default executor, never on the loop)."""
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self.batches += 1
            results = self._match(queries)
            return results, await loop.run_in_executor(None, then, results)
        request: _Request[Q, R] = _Request(queries, self._size(queries), loop.create_future(), then)
        self._queue.append(request)
        self._pump(loop)
        both: tuple[list[R], T] = await request.future
        return both

    def close(self) -> None:
        """Stop the worker threads once the searches in flight end."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _take(self) -> list[_Request[Q, R]]:
        first = self._queue.popleft()
        batch, total = [first], first.size
        if first.alone:
            return batch
        while self._queue and not self._queue[0].alone:
            nxt = self._queue[0]
            if total + nxt.size > self.batch_hashes:
                break
            batch.append(self._queue.popleft())
            total += nxt.size
        return batch

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._executor is not None
        while self._queue and self._busy < self.workers:
            # Callers that gave up (deadline passed, cancelled) are not searched for.
            while self._queue and self._queue[0].future.done():
                self._queue.popleft()
            if not self._queue:
                return
            batch = self._take()
            self._busy += 1
            self.batches += 1
            done = loop.run_in_executor(self._executor, self._run, batch)
            done.add_done_callback(functools.partial(self._finish, loop, batch))

    def _run(self, batch: list[_Request[Q, R]]) -> list[Any]:
        """On a worker: the batch's search, then each request's follow-up; per request, its
        results (or its results and follow-up's outcome, an exception being an outcome)."""
        queries = [q for r in batch for q in r.queries] if len(batch) > 1 else batch[0].queries
        results = self._match(queries)
        out: list[Any] = []
        at = 0
        for request in batch:
            mine = results[at : at + len(request.queries)]
            at += len(request.queries)
            if request.then is None:
                out.append(mine)
                continue
            try:
                out.append((mine, request.then(mine)))
            except Exception as exc:  # this request's own failure
                out.append(exc)
        return out

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Request[Q, R]],
        done: asyncio.Future[list[R]],
    ) -> None:
        self._busy -= 1
        error = done.exception()
        if error is not None and len(batch) > 1:
            # Whose error is it? Run each request alone, next (its callers have waited).
            for request in reversed(batch):
                request.alone = True
                self._queue.appendleft(request)
        elif error is not None:
            if not batch[0].future.done():
                batch[0].future.set_exception(error)
        else:
            for request, outcome in zip(batch, done.result(), strict=True):
                if request.future.done():
                    continue
                if isinstance(outcome, Exception):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)
        self._pump(loop)
