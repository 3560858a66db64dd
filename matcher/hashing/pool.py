"""Map a function over items in worker processes of our own, results in input order.

Why not ``multiprocessing`` (or ``concurrent.futures``)? Its processes start by importing the
caller's main module again (``spawn``, ``forkserver``), so a script that calls us without an
``if __name__ == "__main__":`` guard runs itself again in every worker and the pool breaks
(``BrokenProcessPool``); ``fork`` is unsafe in a process that runs gRPC threads (a scan does).
And when the parent is killed (``kill -9``), its fork server, resource tracker and workers
stay running (seen here: all still alive 5 s after the kill). Here each worker is a fresh
``python -c`` that imports only the function's module, and it cannot outlive its parent:

- it reads its work from a pipe whose only writer is the parent: EOF when the parent is gone;
- on Linux, ``PR_SET_PDEATHSIG`` also kills it at once if the parent dies mid-item (it then
  checks its parent is still the one that started it, closing the race with the prctl call).

Protocol: length-prefixed pickles. The parent sends the function once, then one item at a
time; the worker answers each item with ``(True, result)`` or ``(False, exception)``. Item
``i`` goes to worker ``i % jobs`` and its answer is read from that worker, so results come back
in input order with no reordering buffer, and at most ``window`` items are in flight.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from matcher.errors import MatcherError

__all__ = ["WorkerDied", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")

_HEADER = struct.Struct("!Q")
_BOOT = (
    "import pickle, sys; sys.path[:0] = pickle.loads(bytes.fromhex(sys.argv[1])); "
    "from matcher.hashing.pool import _serve; _serve(int(sys.argv[2]))"
)


class WorkerDied(MatcherError):
    """A worker process ended without answering (killed, out of memory, a crash in C code)."""


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl call
        os._exit(1)


def _serve(parent: int) -> None:
    """A worker's life: answer items from stdin on a private copy of stdout until EOF."""
    import queue
    import threading

    _die_with_parent(parent)
    # Ctrl-C reaches every process of the terminal's group: the parent handles it and closes
    # our pipe; a worker would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox = sys.stdin.buffer
    outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not break the protocol
    try:
        fn = _receive(inbox)
    except EOFError:
        return
    except Exception as exc:  # e.g. a function of the caller's own script (no __main__ here)
        failure = RuntimeError(f"a worker cannot load the function: {exc}")

        def fn(item: object) -> object:
            raise failure

    # A thread drains the inbox as items arrive, so the parent never blocks writing an item
    # while this process blocks writing an answer the parent has not read yet (a deadlock
    # once both pipes are full). The parent's window bounds what waits here.
    items: queue.SimpleQueue[tuple[bool, object]] = queue.SimpleQueue()

    def read() -> None:
        try:
            while True:
                items.put((True, _receive(inbox)))
        except (EOFError, OSError):
            items.put((False, None))

    threading.Thread(target=read, name="matcher-pool-inbox", daemon=True).start()
    try:
        while True:
            more, item = items.get()
            if not more:
                return
            try:
                answer: tuple[bool, object] = (True, fn(item))
            except Exception as exc:
                answer = (False, exc)
            try:
                _send(outbox, answer)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                _send(outbox, (False, RuntimeError(f"the answer cannot be pickled: {exc}")))
    except (BrokenPipeError, KeyboardInterrupt):
        pass


class _Worker:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        env = dict(os.environ)
        # One item at a time per process, and N processes already use N cores: OpenBLAS's
        # own thread per core would only cost start-up CPU (~0.1 s per process).
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        path = pickle.dumps([p for p in sys.path if p]).hex()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, path, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.inbox: IO[bytes] = self.process.stdin
        self.outbox: IO[bytes] = self.process.stdout
        _send(self.inbox, fn)

    def submit(self, item: object) -> None:
        # If it died, the answer read for this item says so.
        with contextlib.suppress(BrokenPipeError):
            _send(self.inbox, item)

    def result(self) -> Any:
        try:
            ok, value = _receive(self.outbox)
        except EOFError:
            code = self.process.wait()
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            raise WorkerDied(f"a hashing process ended without answering ({how})") from None
        if not ok:
            raise value
        return value

    def close(self, wait: float) -> None:
        with contextlib.suppress(OSError):
            self.inbox.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.outbox.close()


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int = 1,
    window: int | None = None,
    inline: bool | None = None,
) -> Iterator[R]:
    """Map ``fn`` over ``items`` in ``jobs`` worker processes, yielding results in input order.

    At most ``window`` items are in flight (default 8 per process), so memory stays flat however
    long the input is, and results stream out while later items are still being read.
    ``fn`` must be importable by the workers: a module-level function of a module (not of the
    running script, which the workers never import) or a ``functools.partial`` of one; an
    exception it raises is raised here, for its item. ``inline`` runs ``fn`` in this process:
    by default when ``jobs`` is 1 or there is only one item (a pool would only add its
    start-up); ``inline=False`` keeps the work off this process even then, whose own threads
    then keep its interpreter to themselves.

    >>> list(ordered_map(abs, [-3, 2, -1], jobs=2))
    [3, 2, 1]
    """
    it = iter(items)
    if inline is None:
        if jobs <= 1:
            inline = True
        else:
            head = list(_take(it, 2))
            inline = len(head) < 2
            it = _chain(head, it)
    if inline:
        yield from map(fn, it)
        return
    window = max(window or jobs * 8, jobs)
    workers: list[_Worker] = []
    pending: deque[_Worker] = deque()
    try:
        for n, item in enumerate(it):
            if n < jobs:
                workers.append(_Worker(fn))
            worker = workers[n % jobs]
            worker.submit(item)
            pending.append(worker)
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for worker in workers:
            worker.close(wait=0 if pending else 5)


def _take(it: Iterator[T], n: int) -> Iterator[T]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def _chain(head: list[T], rest: Iterator[T]) -> Iterator[T]:
    yield from head
    yield from rest
