"""Tier D (crops and small rotations) against enrolled and query-side crop grids (issue 14).

``python -m bench.quality.grid_study BANK_PICKLE [--originals 4]``: the tier-D edits of every Nth
design original are hashed with the query profile plus wide grids of query crops (5x5 at 90 and
95%, 3x3 at 85, 80 and 75%); the bank is the enroll-wide views saved by ``python -m bench.quality
--hashes BANK_PICKLE`` with the same ``--originals``. Each pair of an enrolled grid and a query
grid is then a subset of these views, by name, and the table gives its tier-D recall. This is
how the shipped pair (95 stored hashes, 52 query crops) was chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.quality.analysis import own_min_distance
from bench.quality.collect import collect_edits
from bench.quality.edits import EDITS
from bench.quality.frontier import _P3, _P4, _P5, _enroll, _query
from matcher.hashing import views as V
from matcher.hashing.views import _grid

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))

ENROLLED = {
    "enroll-wide (issue 6)": lambda n: True,
    "shipped (3x3 95%, 4x4 90/80%)": _enroll({0.95: _P3, 0.9: _P4, 0.85: None, 0.8: _P4}),
    "+ 3x3 at 85%": _enroll({0.95: _P3, 0.9: _P4, 0.85: _P3, 0.8: _P4}),
    "3x3 at every scale": _enroll({0.95: _P3, 0.9: _P3, 0.85: _P3, 0.8: _P3}),
    "shipped without 75/70% grids": _enroll(
        {0.95: _P3, 0.9: _P4, 0.85: None, 0.8: _P4, 0.75: None, 0.7: None}
    ),
    "enroll-light": _enroll({s: None for s in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)}),
}
QUERIED = {
    "issue 6 (3x3 at 90%)": _query({0.9: _P3}),
    "+ 3x3 at 80, 95%": _query({0.9: _P3, 0.8: _P3, 0.95: _P3}),
    "+ 3x3 at 80, 85, 95%": _query({0.9: _P3, 0.8: _P3, 0.85: _P3, 0.95: _P3}),
    "shipped (5x5 90%, 3x3 95/85/80%)": _query({0.9: _P5, 0.8: _P3, 0.85: _P3, 0.95: _P3}),
    "5x5 at 90, 95%, 3x3 85/80%": _query({0.9: _P5, 0.8: _P3, 0.85: _P3, 0.95: _P5}),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.grid_study", description=__doc__)
    parser.add_argument("bank", type=Path)
    parser.add_argument("--originals", type=int, default=4)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    with args.bank.open("rb") as f:
        bank = pickle.load(f)[0]
    originals = sorted((DATA / "photos" / "bsds500").rglob("*.jpg"))[:: args.originals]
    wide = (*_grid(0.9, _P5), *_grid(0.95, _P5), *_grid(0.85, _P3), *_grid(0.8, _P3))
    config = dataclasses.replace(
        V.QUERY,
        crops=tuple(dict.fromkeys((*wide, *_grid(0.75, _P3)))),
        rectangles=0,
        nested=(0, 0),
    )
    edits = [e for e in EDITS if e.tier == "D"]
    queries, origin, _ = collect_edits(originals, config, args.jobs, args.seed, edits=edits)
    print("| enrolled | stored per image | query crops | query hashes per image | tier D |")
    print("|---|---:|---|---:|---:|")
    for en, keep_e in ENROLLED.items():
        b = bank.select(keep_e)
        for qn, keep_q in QUERIED.items():
            q = queries.select(keep_q)
            found = own_min_distance(q, b, origin) <= V.MATCH_DISTANCE
            print(
                f"| {en} | {b.views_per_picture():.1f} | {qn} | {q.views_per_picture():.1f} | "
                f"{100 * found.mean():.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
