"""Summarise a py-spy recording (``py-spy record --format raw``: collapsed stacks) of a server.

Prints the share of busy samples by where they were, innermost first: the frames that matter
for the match path are named, the rest grouped by module. Usage::

    python -m bench.pyspy_summary FILE [--top 25]

How to read it (Python frames only, as ``test_upload_speed`` records them):

- a thread waiting is not busy: the event loop in ``select``, a pool worker in its queue's
  ``get`` (``concurrent/futures/thread.py`` ``_worker``), a thread in ``threading`` waits.
  Counted as busy, idle match workers once read as a fifth of the server's time;
- the index kernels are compiled and release the GIL: their samples sit on the lines of
  ``_Segment.search`` that call them, named apart from the index's Python;
- grpc's server is Cython: its work (reading and writing the sockets, waking its poller
  thread, the call's state) has no Python frame of its own and shows as the event loop's
  ``Handle._run`` with nothing inside: named "grpc (Cython, on the event loop)". What is
  left of asyncio is futures, wake-ups and the loop's own bookkeeping.
"""

from __future__ import annotations

import argparse
from collections import Counter

# (label, substrings of a frame): the first that matches a stack, from its innermost frame
# outwards, names its sample.
_NAMED = (
    ("numba compiling a kernel (a warm-up miss)", ("numba/core",)),
    ("index kernels (compiled, GIL released)", ("mih_search", "flat_search", "Segment.search")),
    ("index Python and numpy (_search_chunk, merge)", ("matcher/index.py",)),
    ("shared probing check (probe_counts, store)", ("probe_counts.py", "record_probes")),
    ("Bank.match grouping", ("matcher/bank/matching.py",)),
    ("probing detector (per replica)", ("matcher/bank/probing.py",)),
    ("contract: protobuf to records and back", ("matcher/contract.py",)),
    ("store, other (active items)", ("matcher/store/",)),
    ("match dispatcher", ("matcher/service/dispatch.py",)),
    ("servicer (auth, limits, metrics)", ("matcher/service/",)),
    ("thread pool hand-off", ("concurrent/futures", "threading.py", "queue.py")),
    ("asyncio (futures, wake-ups, loop)", ("asyncio", "selectors.py")),
    ("grpc (Python)", ("grpc",)),
)
_GRPC_CYTHON = "grpc (Cython, on the event loop)"
# Innermost frames of a thread that waits (py-spy without --idle still samples some).
_WAITING = (
    "select (selectors.py",
    "_worker (concurrent/futures/thread.py:81)",
    "wait (threading.py",
    "_wait_for_tstate_lock",
    "epoll",
    "idle",
)


def label(frames: list[str]) -> str:
    """The name of one sample's stack (its frames outermost first), or "idle (waiting)"."""
    if any(w in frames[-1] for w in _WAITING):
        return "idle (waiting)"
    if "numba/core" in ";".join(frames):
        return _NAMED[0][0]
    if frames[-1].startswith("Handle._run "):
        return _GRPC_CYTHON
    if any("probe_counts.py" in f or "record_probes" in f for f in frames):
        # Everything under the check, its SQLite helpers too, is the check's.
        return _NAMED[3][0]
    for frame in reversed(frames):
        for name, keys in _NAMED:
            if any(k in frame for k in keys):
                if name == _NAMED[1][0] and "Segment.search" in frame:
                    # ``_Segment.search``'s own lines are numpy set-up; the kernel calls are
                    # the ones holding samples with no frame inside (compiled code).
                    return name if frame is frames[-1] else _NAMED[2][0]
                return name
    return "other"


def summarise(path: str) -> Counter[str]:
    by: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack:
                by[label(stack.split(";"))] += int(count)
    return by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    by = summarise(args.file)
    busy = sum(c for k, c in by.items() if k != "idle (waiting)")
    print(f"{busy} busy samples ({sum(by.values())} in all)")
    for name, count in by.most_common(args.top):
        if name != "idle (waiting)":
            print(f"{count / busy:6.1%}  {name}")


if __name__ == "__main__":
    main()
