"""The frontier of issue 14: recall per tier against stored hashes per image, for several profiles.

Every profile here is a subset of the views collected once (every enroll profile's views, and
the shipped query profile plus issue 6's 9 crops of 90%), picked by view name, so the whole
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
from matcher.hashing import views as V
from matcher.hashing.views import (
    ENROLL,
    ENROLL_COMPACT,
    ENROLL_LIGHT,
    ENROLL_WIDE,
    EnrollConfig,
    view_names,
)

__all__ = [
    "ISSUE14_FIRST",
    "PROFILES",
    "FrontierRow",
    "Profile",
    "evaluate_frontier",
    "frontier_rows",
]

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


def _shipped_query(name: str) -> bool:
    """The shipped query profile: every collected query view but issue 6's 90% crops."""
    return not name.startswith("qcrop0.9@")


def _issue6_query(name: str) -> bool:
    """Issue 6's query profile: its 9 crops of 90%, none of the shipped query's 95% crops."""
    return _ISSUE6_QUERY(name) and not name.startswith(("qcrop0.95@", "qmcrop"))


def _names(config: EnrollConfig) -> Pred:
    names = frozenset(view_names(config))
    return lambda name: name in names


def _light(name: str) -> bool:
    c = _crop(name)
    return c is None or (c[1], c[2]) == (0.5, 0.5) or c[0] <= 0.5


ISSUE14_FIRST = EnrollConfig(
    crops=(
        *((s, 0.5, 0.5) for s in (0.975, 0.95, 0.925, 0.9, 0.85, 0.8, 0.75, 0.7)),
        *V._off_centre(0.85, V._INNER),
        *V._off_centre(0.825, V._INNER),
        *V._off_centre(0.775, V._INNER),
        *((0.775, x, y) for y in _P4 for x in _P4 if (x, y) not in V._CORNER_GRID),  # 4x4 rim
        *(c for s in (0.95, 0.9, 0.85, 0.8) for c in V._at(s, V._CORNER_GRID)),
        *V._HALVES,
    ),
    rotations=(-3.5, -1.5, 1.5, 3.5),
    filled_rotations=(-5.0, -2.0, 2.0, 5.0),
    dihedral=True,
    mirrored_crops=(*V._grid(0.9, V._INNER), *V._grid(0.85, V._INNER)),
)
"""Issue 14's first shipped ``enroll`` (99 hashes), replaced by the present one: a frontier row."""


@dataclass(frozen=True)
class Profile:
    name: str
    enroll: Pred
    query: Pred
    description: str


PROFILES: tuple[Profile, ...] = (
    Profile(
        "enroll-wide + issue 6 query (shipped before)",
        _names(ENROLL_WIDE),
        _issue6_query,
        "issue 6's profiles, the defaults until issue 14: `enroll-wide` (223: 5x5 grid at 95%, "
        "7x7 at 90/85/80%, 3x3 at 75/70%) and the query's 9 crops of 90%, with the pictures "
        "found inside the upload",
    ),
    Profile(
        "enroll-wide + query",
        _names(ENROLL_WIDE),
        _shipped_query,
        "`enroll-wide` with the shipped query profile (9 crops of 95%, 4 of them mirrored)",
    ),
    Profile(
        "enroll + query (shipped)",
        _names(ENROLL),
        _shipped_query,
        "the shipped profiles: `enroll` (100: inner 3x3 grids at 87.5/82.5/80/77.5%, inner 2x2 of "
        "a 4x4 grid at 90/85/80/75%, edge middles at 87.5%, corners at 80%, mirrored corners at "
        "90/87.5/85/82.5% and mirrored centres at 90/87.5/85/82.5%, 2+4 rotations) and `query`",
    ),
    Profile(
        "issue 14's first enroll + query",
        _names(ISSUE14_FIRST),
        _shipped_query,
        "the `enroll` first shipped for issue 14 (99: inner 3x3 grids at 85/82.5/77.5%, 4x4 at "
        "77.5%, corners at 95/90/85/80%, mirrored inner 3x3 grids at 90/85%, 4+4 rotations), "
        "which lost tier D's corner-anchored crops",
    ),
    Profile(
        "enroll, issue 6 query",
        _names(ENROLL),
        _issue6_query,
        "`enroll` with issue 6's 9 unmirrored query crops of 90%: what the new query crops buy",
    ),
    Profile(
        "enroll-compact + query",
        _names(ENROLL_COMPACT),
        _shipped_query,
        "`enroll-compact` (95: 3x3 grid at 95%, 4x4 at 90 and 80%, 3x3 at 75/70%, no mirrored "
        "crop) with the shipped query",
    ),
    Profile(
        "enroll-light + query",
        _names(ENROLL_LIGHT),
        _shipped_query,
        "`enroll-light` (39): no off-centre crops but the 50% corners (full, turns, centred "
        "crops, rotations), with the shipped query profile",
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


def frontier_rows(
    rows: Sequence[FrontierRow], edit_index: np.ndarray, false_matches: bool = True
) -> list[str]:
    """The frontier table; ``false_matches=False`` for rows evaluated without distractors,
    whose false-match and nearest-distractor cells would say nothing."""
    tier_of = np.array([EDITS[i].tier for i in edit_index])
    tail = " false matches | nearest distractor |" if false_matches else ""
    lines = [
        "| profile | stored per image | query hashes per image | "
        + " | ".join(TIERS)
        + " | all |"
        + tail,
        "|---|---:|---:|" + "---:|" * (len(TIERS) + (3 if false_matches else 1)),
    ]
    for r in rows:
        cells = [f"{100 * r.found[tier_of == t].mean():.1f}%" for t in TIERS]
        lines.append(
            f"| {r.profile.name} | {r.stored:.1f} | {r.queried:.1f} | "
            + " | ".join(cells)
            + f" | {100 * r.found.mean():.1f}% |"
            + (f" {r.false_matches} | {r.nearest} |" if false_matches else "")
        )
    lines += [""]
    lines += [f"- **{r.profile.name}**: {r.profile.description}." for r in rows]
    return lines
