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


def _query_crop(name: str) -> tuple[float, float, float] | None:
    return _crop(name[1:]) if name.startswith("qcrop") else None


def _query(grids: dict[float, Sequence[float]]) -> Pred:
    """Every query view but the query crops, whose grid per scale is ``grids[scale]``."""

    def keep(name: str) -> bool:
        c = _query_crop(name)
        if c is None:
            return True
        positions = grids.get(c[0])
        return positions is not None and _on(c[1], positions) and _on(c[2], positions)

    return keep


_P5 = (0.0, 0.25, 0.5, 0.75, 1.0)
_ISSUE6_QUERY = _query({0.9: _P3})
_SHIPPED_QUERY = _query({0.9: _P5, 0.95: _P3, 0.85: _P3, 0.8: _P3})
_MORE_QUERY = _query({0.9: _P5, 0.95: _P5, 0.85: _P3, 0.8: _P3})
_COMPACT = _enroll({0.95: _P3, 0.9: _P4, 0.85: None, 0.8: _P4})


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
        "issue 6",
        lambda n: True,
        _ISSUE6_QUERY,
        "issue 6's profiles (`enroll-wide`: 5x5 grid at 95%, 7x7 at 90/85/80%, 3x3 at 75/70%; "
        "the query's 9 crops at 90%), with this issue's pictures found inside the upload",
    ),
    Profile(
        "enroll-wide + query",
        lambda n: True,
        _SHIPPED_QUERY,
        "`enroll-wide` with the shipped query profile (52 crops)",
    ),
    Profile(
        "enroll-compact + query",
        _COMPACT,
        _SHIPPED_QUERY,
        "`enroll-compact` (3x3 grid at 95%, 4x4 at 90 and 80%, 3x3 at 75/70%; the query's "
        "5x5 grid of 90% crops and 3x3 grids at 95, 85 and 80%)",
    ),
    Profile(
        "enroll-compact, issue 6 query",
        _COMPACT,
        _ISSUE6_QUERY,
        "`enroll-compact` with issue 6's 9 query crops: what the query crops buy",
    ),
    Profile(
        "enroll-compact + more query crops",
        _COMPACT,
        _MORE_QUERY,
        "`enroll-compact`, the query's 95% grid 5x5 instead of 3x3 (+16 query hashes)",
    ),
    Profile(
        "79 hashes",
        _enroll({0.95: _P3, 0.9: _P4, 0.85: None, 0.8: _P4, 0.75: None, 0.7: None}),
        _SHIPPED_QUERY,
        "`enroll-compact` without the 75% and 70% grids",
    ),
    Profile(
        "enroll-light + query",
        _light,
        _SHIPPED_QUERY,
        "`enroll-light`: no off-centre crops but the 50% corners (full, turns, centred crops, "
        "rotations), with the shipped query profile",
    ),
    Profile(
        "enroll-light + more query crops",
        _light,
        _MORE_QUERY,
        "`enroll-light` with the 5x5 grid of 95% query crops",
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
