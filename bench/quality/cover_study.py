"""Enroll covers of at most 100 hashes, scored offline from one hashing pass (issue 14).

``python -m bench.quality.cover_study collect PICKLE`` enrolls every Nth design original
(``--originals``, 4) and the second photo set with ``SUPERSET`` (399 views: every profile's and
candidate crops: inner grids, corners and edge middles at every scale from 95 to 70%, mirrored
corners, edges and centres) and hashes their tier D, E and F edits with the shipped query plus
issue 6's crops, without the pictures found inside (the costly part of a query, which does not
depend on the enrolled crops). ``python -m bench.quality.cover_study score PICKLE`` then builds a
cover from whole symmetric groups (one scale's corners, edge middles, inner grid...): groups are
added by recall gained per hash, then swapped in and out while recall rises, under the budget
(every tier of each set weighs the same); fitted once on every photo and once on the even-
numbered ones, with the odd-numbered ones scored as held out. No picture is hashed again.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality import __main__ as bench
from bench.quality.analysis import own_min_distance
from bench.quality.collect import HashSet, collect_edits, collect_originals
from bench.quality.edits import EDITS
from bench.quality.frontier import ISSUE14_FIRST, _issue6_query, _names, _shipped_query
from bench.quality.second_set import default_folder
from matcher.hashing import views as V

_P7 = V._P7
_P3 = V._P3
_CORNERS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))


def _at(scale: float, places: Sequence[tuple[float, float]]) -> list[tuple[float, float, float]]:
    return [(scale, x, y) for x, y in places]


_RIM = [(x, y) for y in V._P4 for x in V._P4 if (x, y) not in _CORNERS]  # a 4x4 grid but corners
_SCALES = (0.95, 0.925, 0.9, 0.875, 0.85, 0.825, 0.8, 0.775, 0.75, 0.7)
SUPERSET = dataclasses.replace(
    V.ENROLL_WIDE,
    crops=tuple(
        dict.fromkeys(
            [
                *V.ENROLL_WIDE.crops,
                *V.ENROLL_SHIPPED.crops,
                *(c for s in _SCALES for c in V._off_centre(s, _P3)),
                *(c for s in (0.9, 0.875, 0.85, 0.825, 0.8, 0.775) for c in V._grid(s, V._INNER)),
                *(c for s in (0.8, 0.775, 0.75) for c in _at(s, _RIM)),
            ]
        )
    ),
    mirrored_crops=tuple(
        dict.fromkeys(
            [
                *(c for s in _SCALES[:8] for c in V._grid(s, _P3)),
                *(c for s in (0.9, 0.85, 0.8) for c in V._grid(s, V._INNER)),
            ]
        )
    ),
)
"""Every enroll profile's views and the candidate crops the covers are made of."""

# The query side as shipped plus issue 6's 9 crops of 90% (the old pair), without the pictures
# found inside the upload (the finder is most of a query's cost and does not depend on the
# enrolled crops; tiers G and H, which need it, are left to the benchmark).
QUERY = dataclasses.replace(
    V.QUERY,
    crops=tuple(dict.fromkeys([*V.QUERY.crops, *V.QUERY_ISSUE6.crops])),
    rectangles=0,
    nested=(0, 0),
)
STUDY_TIERS = ("D", "E", "F")


def collect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.cover_study collect")
    parser.add_argument("pickle", type=Path)
    parser.add_argument("--originals", type=int, default=4)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    opts = parser.parse_args(argv)
    edits = [e for e in EDITS if e.tier in STUDY_TIERS]
    originals = sorted((bench.DATA / "photos" / "bsds500").rglob("*.jpg"))[:: opts.originals]
    second = sorted(default_folder().glob("*.jpg"))
    out = []
    for label, paths, seed in (("design", originals, opts.seed), ("second", second, opts.seed + 1)):
        print(f"{label}: enrolling {len(paths)}...", file=sys.stderr, flush=True)
        bank = collect_originals(paths, SUPERSET, opts.jobs)
        print(f"{label}: {len(edits)} edits each...", file=sys.stderr, flush=True)
        out.append((label, bank, *collect_edits(paths, QUERY, opts.jobs, seed, edits=edits)))
    with opts.pickle.open("wb") as f:
        pickle.dump(out, f)
    return 0


Pred = Callable[[str], bool]


@dataclass
class Sample:
    """One photo set's queries against the superset bank: ``dist[q, v]`` is the smallest
    distance from any view of query ``q`` (under the query profile) to enrolled view ``v`` of
    its own original (257 where either is missing)."""

    label: str
    dist: np.ndarray
    tier: np.ndarray
    edit: np.ndarray
    origin: np.ndarray
    names: list[str]
    old: np.ndarray  # found by the old pair (enroll-wide + issue 6 query)

    def part(self, keep: np.ndarray, label: str) -> Sample:
        """Only the queries where ``keep`` is true."""
        return Sample(
            label,
            self.dist[keep],
            self.tier[keep],
            self.edit[keep],
            self.origin[keep],
            self.names,
            self.old[keep],
        )


def _sample(
    label: str, bank: HashSet, queries: HashSet, origin: np.ndarray, edit_index: np.ndarray
) -> Sample:
    q = queries.select(_shipped_query)
    b_order = np.argsort(bank.owner, kind="stable")
    b_starts = np.searchsorted(bank.owner[b_order], np.arange(bank.pictures + 1))
    q_order = np.argsort(q.owner, kind="stable")
    q_starts = np.searchsorted(q.owner[q_order], np.arange(q.pictures + 1))
    dist = np.full((q.pictures, len(bank.names)), 257, dtype=np.int16)
    for p in range(q.pictures):
        qs = q.hashes[q_order[q_starts[p] : q_starts[p + 1]]]
        rows = b_order[b_starts[origin[p]] : b_starts[origin[p] + 1]]
        if len(qs) and len(rows):
            d = np.bitwise_count(qs[:, None, :] ^ bank.hashes[rows][None, :, :]).sum(axis=2)
            dist[p, bank.name[rows]] = d.min(axis=0)
    old = (
        own_min_distance(queries.select(_issue6_query), bank.select(_names(V.ENROLL_WIDE)), origin)
        <= V.MATCH_DISTANCE
    )
    tier = np.array([EDITS[i].tier for i in edit_index])
    return Sample(label, dist, tier, edit_index, origin, bank.names, old)


def load(path: Path) -> list[Sample]:
    with path.open("rb") as f:
        sets = pickle.load(f)
    out = []
    for label, bank, queries, origin, edit_index in sets:
        flat = sorted(set(range(bank.pictures)) - set(np.unique(bank.owner).tolist()))
        queries, origin, edit_index = bench._drop_originals(queries, origin, edit_index, flat)
        out.append(_sample(label, bank, queries, origin, edit_index))
    return out


def found(s: Sample, cover: Sequence[str]) -> np.ndarray:
    cols = [s.names.index(n) for n in cover if n in s.names]
    return (s.dist[:, cols] <= V.MATCH_DISTANCE).any(axis=1)


def tier_line(s: Sample, f: np.ndarray) -> str:
    return " | ".join(f"{100 * f[s.tier == t].mean():.1f}" for t in STUDY_TIERS)


def report(samples: Sequence[Sample], covers: dict[str, Sequence[str]]) -> None:
    for s in samples:
        print(f"\n{s.label}: | cover | size | " + " | ".join(STUDY_TIERS) + " | corner family |")
        corner = np.array([EDITS[i].name.startswith("crop_corner") for i in s.edit])
        print(f"| old pair | 223 | {tier_line(s, s.old)} | {100 * s.old[corner].mean():.1f} |")
        for name, cover in covers.items():
            f = found(s, cover)
            print(f"| {name} | {len(cover)} | {tier_line(s, f)} | {100 * f[corner].mean():.1f} |")


def unique(samples: Sequence[Sample], cover: Sequence[str]) -> list[tuple[str, int]]:
    """Per view of ``cover``, how many queries (both sets) only it catches."""
    counts = dict.fromkeys(cover, 0)
    for s in samples:
        cols = [s.names.index(n) for n in cover if n in s.names]
        hit = s.dist[:, cols] <= V.MATCH_DISTANCE
        only = hit.sum(axis=1) == 1
        for j in np.flatnonzero(hit[only].any(axis=0)):
            counts[s.names[cols[j]]] += int(hit[only, j].sum())
    return sorted(counts.items(), key=lambda kv: kv[1])


def _name(scale: float, x: float, y: float, mirrored: bool = False) -> str:
    return f"{'m' if mirrored else ''}crop{scale:g}@{x:g},{y:g}"


def group(kind: str, scale: float, mirrored: bool = False) -> list[str]:
    """The names of one family of crops at one scale: ``corners``, ``edges`` (the middles of the
    4 sides), ``inner`` (the inner 3x3 of the 7x7 offsets but its centre), ``p4inner`` (the
    inner 2x2 of a 4x4 grid), ``centre``."""
    places = {
        "corners": _CORNERS,
        "edges": ((0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0)),
        "inner": [(x, y) for y in V._INNER for x in V._INNER if (x, y) != (0.5, 0.5)],
        "p4inner": V._P4_INNER,
        "centre": ((0.5, 0.5),),
    }[kind]
    return [_name(scale, x, y, mirrored) for x, y in places]


# Always kept: the full picture, its turns and flips, the 70% centred crop, the 50% corners and
# centre, and the rotations that tier D's rotated edits need (they serve tiers the study does not
# hash: B, F's collages, G and H).
MUST = [
    "full",
    *(f"dih/{n}" for n in V._DIHEDRAL_OPS),
    "crop0.7@0.5,0.5",
    *(_name(s, x, y) for s, x, y in V._HALVES),
    "rot-3.5",
    "rot+3.5",
    "rotfill-5",
    "rotfill+5",
    "rotfill-2",
    "rotfill+2",
]


def search(
    samples: Sequence[Sample], groups: dict[str, list[str]], budget: int, rounds: int = 40
) -> list[str]:
    """``MUST`` and whole groups: added by recall gained per hash, then one group swapped for
    another (or added) while the score rises, within ``budget`` names. The score is the sum over
    the samples and ``STUDY_TIERS`` of each tier's recall."""
    names = samples[0].names
    weights, hits = [], []
    for s in samples:
        w = np.zeros(len(s.tier))
        for t in STUDY_TIERS:
            m = s.tier == t
            w[m] = 1.0 / max(1, int(m.sum()))
        weights.append(w)
        hits.append(s.dist <= V.MATCH_DISTANCE)

    def score(chosen: Sequence[str]) -> tuple[float, int]:
        cover = set(MUST) | {n for g in chosen for n in groups[g]}
        idx = [names.index(n) for n in cover]
        total = sum(
            float(w[h[:, idx].any(axis=1)].sum()) for w, h in zip(weights, hits, strict=True)
        )
        return total, len(cover)

    chosen: list[str] = []
    while True:
        cur, size = score(chosen)
        best: tuple[float, str] | None = None
        for g in groups:
            if g in chosen:
                continue
            sc, sz = score([*chosen, g])
            if size < sz <= budget and (best is None or (sc - cur) / (sz - size) > best[0]):
                best = ((sc - cur) / (sz - size), g)
        if best is None or best[0] <= 0:
            break
        chosen.append(best[1])
    for _ in range(rounds):
        cur, _size = score(chosen)
        move: tuple[float, str | None, str] | None = None
        for out in [None, *chosen]:
            rest = [g for g in chosen if g != out]
            for g in groups:
                if g in rest:
                    continue
                sc, sz = score([*rest, g])
                if sz <= budget and sc > cur + 1e-9 and (move is None or sc > move[0]):
                    move = (sc, out, g)
        if move is None:
            break
        print(f"  -{move[1]} +{move[2]}: +{100 * (move[0] - cur):.2f}", file=sys.stderr)
        chosen = [*(g for g in chosen if g != move[1]), move[2]]
    print(f"  groups: {sorted(chosen)}", file=sys.stderr)
    return list(dict.fromkeys([*MUST, *(n for g in chosen for n in groups[g])]))


SCALES = (0.95, 0.925, 0.9, 0.875, 0.85, 0.825, 0.8, 0.775, 0.75, 0.7)


def candidate_groups(names: Sequence[str]) -> dict[str, list[str]]:
    out = {}
    for scale in SCALES:
        for kind in ("corners", "edges", "inner", "p4inner", "centre"):
            for m in (False, True):
                g = group(kind, scale, m)
                if all(n in names for n in g):
                    out[f"{'m' if m else ''}{kind}{scale:g}"] = g
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "collect":
        return collect(args[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.quality.cover_study score")
    parser.add_argument("pickle", type=Path)
    parser.add_argument("--budget", type=int, default=100)
    opts = parser.parse_args(args[1:] if args and args[0] == "score" else args)
    samples = load(opts.pickle)
    groups = candidate_groups(samples[0].names)
    for scale in (0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.8, 0.75):
        groups[f"centre{scale:g}"] = [_name(scale, 0.5, 0.5)]
    groups["rot1.5"] = ["rot-1.5", "rot+1.5"]
    covers: dict[str, Sequence[str]] = {
        "enroll (shipped)": V.view_names(V.ENROLL),
        "issue 14's first enroll": V.view_names(ISSUE14_FIRST),
        "enroll-wide (new query)": V.view_names(V.ENROLL_WIDE),
        "enroll-compact": V.view_names(V.ENROLL_COMPACT),
        "enroll-light": V.view_names(V.ENROLL_LIGHT),
    }
    print("fitted on every photo:", file=sys.stderr)
    covers["search, every photo"] = search(samples, groups, opts.budget)
    print("fitted on the even-numbered photos:", file=sys.stderr)
    even = [s.part(s.origin % 2 == 0, s.label + " even") for s in samples]
    covers["search, even photos"] = search(even, groups, opts.budget)
    odd = [s.part(s.origin % 2 == 1, s.label + " odd (held out)") for s in samples]
    report([*samples, *odd], covers)
    print("\nunique contribution (queries only it catches) in the shipped cover:")
    print(unique(samples, covers["enroll (shipped)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
