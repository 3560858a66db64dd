"""The frontier of issue 14: recall per tier against stored hashes per image, for several profiles.

Every profile here is a subset of the views collected once (the shipped enroll profile, and the
shipped query profile plus 3x3 grids of 80% and 95% crops), picked by view name, so the whole
frontier costs one collection. Enrolled crop names are ``crop{scale}@{x},{y}`` with ``x`` and
``y`` the window's place in the room left (0, 1/6, ..., 1 for the 7x7 grids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.quality.analysis import min_distances, own_min_distance
from bench.quality.collect import HashSet
from bench.quality.edits import EDITS, TIERS

__all__ = ["PROFILES", "FrontierRow", "Profile", "evaluate_frontier", "frontier_rows"]

Pred = Callable[[str], bool]


def _crop(name: str) -> tuple[float, float, float] | None:
    if not name.startswith("crop"):
        return None
    scale, _, pos = name[4:].partition("@")
    x, _, y = pos.partition(",")
    return float(scale), float(x), float(y)


def _on(value: float, positions: Sequence[float]) -> bool:
    return any(abs(value - p) < 1e-3 for p in positions)


_P3 = (0.0, 0.5, 1.0)
_P4 = (0.0, 1 / 3, 2 / 3, 1.0)


def _enroll(grids: dict[float, Sequence[float] | None]) -> Pred:
    """Every enrolled view but the off-centre crops, whose grid per scale is ``grids[scale]``
    (positions kept; None drops the scale's off-centre crops; a scale not named keeps all)."""

    def keep(name: str) -> bool:
        c = _crop(name)
        if c is None or (c[1], c[2]) == (0.5, 0.5):
            return True
        scale, x, y = c
        if scale not in grids:
            return True
        positions = grids[scale]
        return positions is not None and _on(x, positions) and _on(y, positions)

    return keep


def _shipped_query(name: str) -> bool:
    return not name.startswith(("qcrop0.8@", "qcrop0.95@"))


def _all_query(name: str) -> bool:
    return True


def _light(name: str) -> bool:
    c = _crop(name)
    return c is None or (c[1], c[2]) == (0.5, 0.5) or c[0] <= 0.5


@dataclass(frozen=True)
class Profile:
    name: str
    enroll: Pred
    query: Pred
    description: str


PROFILES: tuple[Profile, ...] = (
    Profile(
        "shipped (issue 6)",
        lambda n: True,
        _shipped_query,
        "today's enroll profile: 5x5 grid at 95%, 7x7 at 90/85/80%, 3x3 at 75/70%",
    ),
    Profile(
        "4x4 grids at 90/85/80%",
        _enroll({0.9: _P4, 0.85: _P4, 0.8: _P4}),
        _shipped_query,
        "the 7x7 grids thinned to their 4x4 subset (positions 0, 1/3, 2/3, 1)",
    ),
    Profile(
        "4x4 at 90/80%, none at 85%",
        _enroll({0.9: _P4, 0.85: None, 0.8: _P4}),
        _shipped_query,
        "as above without off-centre crops at 85%",
    ),
    Profile(
        "compact",
        _enroll({0.95: _P3, 0.9: _P4, 0.85: None, 0.8: _P4}),
        _shipped_query,
        "3x3 at 95%, 4x4 at 90 and 80%, 3x3 at 75/70%",
    ),
    Profile(
        "compact + query crops",
        _enroll({0.95: _P3, 0.9: _P4, 0.85: None, 0.8: _P4}),
        _all_query,
        "compact, and the query also hashes 3x3 grids of 80% and 95% crops (+18 query hashes)",
    ),
    Profile(
        "shipped + query crops",
        lambda n: True,
        _all_query,
        "today's enroll profile with the query-side 80% and 95% crop grids",
    ),
    Profile(
        "3x3 grids",
        _enroll({0.95: _P3, 0.9: _P3, 0.85: _P3, 0.8: _P3}),
        _all_query,
        "3x3 grids at every scale, with the query-side crop grids",
    ),
    Profile(
        "light",
        _light,
        _all_query,
        "no off-centre crops but the 50% corners: full, turns, centred crops, rotations",
    ),
)


@dataclass
class FrontierRow:
    profile: Profile
    stored: float
    queried: float
    found: np.ndarray
    false_matches: int
    nearest: int


def evaluate_frontier(
    bank: HashSet,
    queries: HashSet,
    origin: np.ndarray,
    distractors: HashSet | None,
    profiles: Sequence[Profile] = PROFILES,
    distance: int = 31,
) -> list[FrontierRow]:
    rows = []
    for p in profiles:
        b, q = bank.select(p.enroll), queries.select(p.query)
        found = own_min_distance(q, b, origin) <= distance
        fm, nearest = 0, 257
        if distractors is not None:
            pm = min_distances(distractors.select(p.query), b).pair_min
            fm, nearest = int((pm <= distance).sum()), int(pm.min())
        rows.append(
            FrontierRow(p, b.views_per_picture(), q.views_per_picture(), found, fm, nearest)
        )
    return rows


def frontier_rows(rows: Sequence[FrontierRow], edit_index: np.ndarray) -> list[str]:
    tier_of = np.array([EDITS[i].tier for i in edit_index])
    lines = [
        "| profile | stored per image | query hashes per image | "
        + " | ".join(TIERS)
        + " | all | false matches | nearest distractor |",
        "|---|---:|---:|" + "---:|" * (len(TIERS) + 3),
    ]
    for r in rows:
        cells = [f"{100 * r.found[tier_of == t].mean():.1f}%" for t in TIERS]
        lines.append(
            f"| {r.profile.name} | {r.stored:.1f} | {r.queried:.1f} | "
            + " | ".join(cells)
            + f" | {100 * r.found.mean():.1f}% | {r.false_matches} | {r.nearest} |"
        )
    lines += [""]
    lines += [f"- **{r.profile.name}**: {r.profile.description}." for r in rows]
    return lines
