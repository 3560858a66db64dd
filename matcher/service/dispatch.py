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
from typing import Generic, TypeVar

__all__ = ["MatchDispatcher"]

Q = TypeVar("Q")
R = TypeVar("R")


@dataclass(slots=True)
class _Request(Generic[Q, R]):
    queries: Sequence[Q]
    size: int
    future: asyncio.Future[list[R]]
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
        return await request.future

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
            queries = [q for r in batch for q in r.queries] if len(batch) > 1 else batch[0].queries
            self._busy += 1
            self.batches += 1
            done = loop.run_in_executor(self._executor, self._match, queries)
            done.add_done_callback(functools.partial(self._finish, loop, batch))

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
            results = done.result()
            at = 0
            for request in batch:
                n = len(request.queries)
                if not request.future.done():
                    request.future.set_result(results[at : at + n])
                at += n
        self._pump(loop)
