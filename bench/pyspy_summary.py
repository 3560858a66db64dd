"""Summarise a py-spy recording (``py-spy record --format raw``: collapsed stacks) of a server.

Prints the share of samples by where they were, innermost first: the frames that matter for
the match path are named, the rest grouped by module. Usage::

    python -m bench.pyspy_summary FILE [--top 25]
"""

from __future__ import annotations

import argparse
from collections import Counter

# (label, substring of a frame): the first that matches a stack, from its innermost frame
# outwards, names its sample.
_NAMED = (
    ("numba compiling a kernel (a warm-up miss)", "numba/core"),
    ("index kernel (mih_search, mih_search_batch)", "mih_search"),
    ("index kernel (flat_search)", "flat_search"),
    ("index Python and numpy (_search_chunk, merge)", "matcher/index.py"),
    ("Bank.match grouping", "matcher/bank/matching.py"),
    ("probing detector", "matcher/bank/probing.py"),
    ("contract: protobuf to records and back", "matcher/contract.py"),
    ("servicer (auth, limits, metrics)", "matcher/service/"),
    ("store check (SQLite)", "matcher/store/"),
    ("grpc and asyncio", "grpc"),
    ("grpc and asyncio", "asyncio"),
    ("thread pool hand-off", "concurrent/futures"),
    ("thread pool hand-off", "threading.py"),
)


def summarise(path: str) -> Counter[str]:
    by: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\\n").rpartition(" ")
            if not stack:
                continue
            frames = stack.split(";")
            label = "other"
            if any("idle" in fr or "epoll" in fr or "select" in fr for fr in frames[-2:]):
                label = "idle (waiting)"
            else:
                for frame in reversed(frames):
                    named = next((lab for lab, key in _NAMED if key in frame), None)
                    if named:
                        label = named
                        break
                if any("numba/core" in fr for fr in frames):
                    label = _NAMED[0][0]
            by[label] += int(count)
    return by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\\n")[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    by = summarise(args.file)
    busy = sum(c for k, c in by.items() if k != "idle (waiting)")
    print(f"{busy} busy samples ({sum(by.values())} in all)")
    for label, count in by.most_common(args.top):
        if label != "idle (waiting)":
            print(f"{count / busy:6.1%}  {label}")


if __name__ == "__main__":
    main()
