"""Several PDQ hashes per picture ("views"), so that edits plain PDQ misses still match.

Plain PDQ at distance 31 survives re-encoding, resizing and colour edits, but not a mirror, a
quarter turn, a 10% crop, a border or a screenshot. Views close most of that gap with hashes only
(the service still never sees a picture):

- **Enrollment** (``enroll_views``): the victim's device stores, beside the full picture's hash,
  hashes of crops of the picture at several scales and offsets and of small rotations, all linked
  to the same image. Enrollment is rare, so extra work and extra stored hashes go here first.
- **Query** (``query_views``): the platform's client hashes the upload as it is, its eight
  rotations and flips (one pass: ``pdq_dihedral``), the content block left once uniform borders,
  letterboxes and app chrome are trimmed (a photo inside a screenshot), its four quadrants
  (a photo inside a 2x2 collage, an overlay that spares three of them), nine crops of 95% (four
  of them mirrored, to meet the mirrored crops enrollment stores), and
  the rectangles with straight outlines found inside it (a photo in a desktop browser or a chat,
  a photo pasted over another one: ``picture_boxes``).

What the service must do (the decision rule, as data: ``MATCH_DISTANCE``):

1. On enrollment, store every hash of ``enroll_views`` as a PDQ hash of the same image (same
   case, same image id). The view names are not needed to match; withdrawal deletes them all.
2. On a query, look up every hash of ``query_views`` with the ordinary range search at
   ``MATCH_DISTANCE`` (31, the registry's PDQ default: no view has a threshold of its own).
3. The upload matches an image when **any** query hash is within that distance of **any** hash
   stored for the image (``matches``). Report each image once, with its smallest distance.

Views whose PDQ quality is below the enrollment floor (flat patches: sky, walls, borders) are
dropped on both sides, because flat patches of unrelated photos hash alike. Costs and recall are
measured by ``make bench-quality`` (``bench/results/quality.md``).

>>> from PIL import Image
>>> image = Image.new("RGB", (64, 64))        # doctest: +SKIP
>>> [name for name, _ in query_views(image)]  # doctest: +SKIP
['full', 'full/rot90', ...]
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from matcher.errors import InvalidInput
from matcher.hashing.compute import pdq, pdq_dihedral
from matcher.signals import PDQ, Hash

__all__ = [
    "ENROLL",
    "ENROLL_COMPACT",
    "ENROLL_LIGHT",
    "ENROLL_SHIPPED",
    "ENROLL_WIDE",
    "MATCH_DISTANCE",
    "PROFILES",
    "QUERY",
    "QUERY_ISSUE6",
    "QUERY_WIDE",
    "EnrollConfig",
    "QueryConfig",
    "check_profile",
    "content_box",
    "content_boxes",
    "enroll_views",
    "matches",
    "picture_boxes",
    "query_views",
    "view_names",
]

View = tuple[str, Hash]
Box = tuple[int, int, int, int]

MATCH_DISTANCE = PDQ.default_distance
"""The one threshold of the view profiles: any query hash within this of any enrolled hash."""


@dataclass(frozen=True, slots=True)
class EnrollConfig:
    """Which extra hashes enrollment stores.

    ``crops`` are (scale, x, y): a window of ``scale`` times each side, its left-top corner at
    ``x`` and ``y`` times the room left (0 left/top, 0.5 centred, 1 right/bottom).
    ``rotations`` are angles in degrees; the rotated picture is cut to its largest centred
    rectangle with no empty corner; ``filled_rotations`` keep the frame, with black corners.
    ``dihedral`` adds the 7 other quarter turns and flips of the picture, hashed from its
    transformed pixels (``dih/<name>``). ``mirrored_crops`` are crops, placed as ``crops``, of
    the picture mirrored left to right (``mcrop<scale>@<x>,<y>``): a mirrored and cropped upload
    meets them through its own (unmirrored) query crops.
    """

    crops: tuple[tuple[float, float, float], ...]
    rotations: tuple[float, ...]
    filled_rotations: tuple[float, ...] = ()
    dihedral: bool = False
    mirrored_crops: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class QueryConfig:
    """Which views a query hashes: the dihedral variants, the trimmed content block, quadrants,
    crops of the upload, and up to ``rectangles`` pictures found inside it (``picture_boxes``);
    ``nested`` (n, m): up to m pictures found again inside each of the first n (a photo in a
    browser window over a desktop wallpaper: the window is found first)."""

    dihedral: bool = True
    trim: bool = True
    quadrants: bool = True
    tile_dihedral: bool = True
    halves: bool = False
    crops: tuple[tuple[float, float, float], ...] = ()
    rectangles: int = 0
    nested: tuple[int, int] = (0, 0)
    mirrored_crops: tuple[tuple[float, float, float], ...] = ()
    """Crops of the upload hashed mirrored left to right (``qmcrop<scale>@<x>,<y>``), from the
    crop's own PDQ pass (``pdq_dihedral``): they meet the enrolled mirrored crops."""


def _grid(scale: float, positions: Sequence[float]) -> list[tuple[float, float, float]]:
    return [(scale, x, y) for y in positions for x in positions]


def _off_centre(scale: float, positions: Sequence[float]) -> list[tuple[float, float, float]]:
    return [c for c in _grid(scale, positions) if c[1:] != (0.5, 0.5)]


_P5 = (0.0, 0.25, 0.5, 0.75, 1.0)
_P7 = (0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1.0)
_P3 = (0.0, 0.5, 1.0)
_P4 = (0.0, 1 / 3, 2 / 3, 1.0)  # a subset of _P7: the names of its crops are those of ENROLL_WIDE
_INNER = (1 / 6, 0.5, 5 / 6)  # the inner 3x3 of _P7 (its names too)

# Why so many crops: PDQ is very sensitive to where a crop falls. On the BSDS500 photos a centred
# crop 2% smaller than an enrolled one moves PDQ by ~25 bits, and a window shifted by 1% of the
# width by ~27 (median): a crop matches only an enrolled crop of nearly the same scale and offset.
# Centred crops (the commonest: apps zoom from the centre) get a fine ladder of scales; off-centre
# crops a grid of offsets: 5x5 at 95%, 7x7 at 90, 85 and 80% (a 5x5 grid there found 81% of random
# 10% crops and 22% of 20% ones; 7x7 on a sample of 30 photos, 100% and 57%), 3x3 at 75 and 70%.
# Quadrants serve stickers and other overlays (three quadrants stay intact) and heavy crops;
# rotations are enrolled both cut to their inner rectangle and with the black corners a naive
# editor leaves.
_CENTRED = tuple(
    (s, 0.5, 0.5)
    for s in (0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.825, 0.8, 0.775, 0.75, 0.725, 0.7)
)
_HALVES = (*[(0.5, x, y) for y in (0.0, 1.0) for x in (0.0, 1.0)], (0.5, 0.5, 0.5))
_ROTATIONS = (-5.0, -3.5, -2.5, -1.5, 1.5, 2.5, 3.5, 5.0)
_FILLED = (-5.0, -3.5, -2.0, 2.0, 3.5, 5.0)

ENROLL_WIDE = EnrollConfig(
    crops=(
        *_CENTRED,
        *_off_centre(0.95, _P5),
        *_off_centre(0.9, _P7),
        *_off_centre(0.85, _P7),
        *_off_centre(0.8, _P7),
        *_off_centre(0.75, _P3),
        *_off_centre(0.7, _P3),
        *_HALVES,
    ),
    rotations=_ROTATIONS,
    filled_rotations=_FILLED,
    dihedral=True,
)
"""The enrollment profile of issue 6 (``enroll-wide``): the full picture, its 7 quarter turns and
flips, 201 crops and 14 small rotations (at most 223 hashes; flat crops are left out)."""

# Issue 14: the same recall for fewer stored hashes. The query side now hashes grids of crops of
# the upload (5x5 at 90%, 3x3 at 95, 85 and 80%): a crop of a crop of the original is a crop of
# the original, so each query crop meets an enrolled one at other offsets, and sparser enrolled
# grids cover what the 7x7 grids did. Measured on 75 of the design photos (tier D, crops and small
# rotations): issue 6's 223 hashes with its 9 query crops 93.0%, these 95 hashes with the 52 query
# crops 93.2%, and without them 85.1%.
ENROLL_COMPACT = EnrollConfig(
    crops=(
        *_CENTRED,
        *_off_centre(0.95, _P3),
        *_off_centre(0.9, _P4),
        *_off_centre(0.8, _P4),
        *_off_centre(0.75, _P3),
        *_off_centre(0.7, _P3),
        *_HALVES,
    ),
    rotations=_ROTATIONS,
    filled_rotations=_FILLED,
    dihedral=True,
)
"""The compact enrollment profile (``enroll-compact``): the full picture, its 7 quarter turns
and flips, 73 crops (a ladder of centred ones, off-centre grids of 3x3 at 95%, 4x4 at 90 and
80%, 3x3 at 75 and 70%, the 50% corners) and 14 small rotations: at most 95 hashes (flat views
are left out). Made for ``query-wide``; it has no mirrored crop, so with the shipped query a
mirrored and off-centre-cropped upload is often missed."""

# Issue 14, the shipped profile: 100 hashes where ENROLL_WIDE stores 223, with the same query
# cost. Why sparse grids are enough:
# - A crop of a crop is a crop: each of the query's 9 crops of 95% meets an enrolled crop at
#   another offset and scale, so sparse grids (the inner 3x3 of the 7x7 offsets at 87.5, 82.5, 80
#   and 77.5%, the inner 2x2 of a 4x4 grid at 90, 85, 80 and 75%) cover many positions of the
#   upload's window.
# - Mirrors double that: the query hashes its 4 corner crops mirrored (``qmcrop``) and its whole
#   picture flipped (``full/flip_h``), so crops of the mirrored picture (``mcrop``) are met by a
#   plain upload at the reflected place as well as by a mirrored one.
# - Corners: a crop anchored in a corner (two sides cut) falls on no inner grid. The query's
#   mirrored 95% corner crop of such an upload is the enrolled mirrored corner crop at 95% of its
#   scale, and a mirrored upload itself meets it, so mirrored corners at 90, 87.5, 85 and 82.5%
#   (with the plain corners at 80%) cover corner crops of 80-100% in steps the 1-2% PDQ
#   tolerates; enroll-wide's plain corners at 95, 90, 85 and 80% left the steps between open.
# Chosen from 399 candidate views hashed once (``python -m bench.quality.cover_study``): whole
# symmetric groups (a scale's corners, edges, inner grid, mirrored centre...), added by recall
# gained per hash and then swapped while tier D-F recall rose, on 75 design photos and the 28
# second-set photos, tier D with the corner-anchored crops. Fitted on half of the photos, the
# other half scored: tier D 90.3% (enroll-wide with issue 6's query 90.3%) and 91.8% (92.8%) on
# the held-out halves of the two sets. The centred crops of 95, 92.5 and 85% and the 1.5 degree
# rotations caught no query that another view missed and are left out. One hand swap: mirrored
# corners at 87.5% for the search's 95% (the same recall; a mirrored upload cut by 12-13% at a
# corner, as tests/test_views.py's astronaut, then meets one directly).
_CORNER_GRID = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
_EDGES = ((0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0))
_P4_INNER = ((1 / 3, 1 / 3), (2 / 3, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 2 / 3))


def _at(scale: float, places: Iterable[tuple[float, float]]) -> list[tuple[float, float, float]]:
    return [(scale, x, y) for x, y in places]


ENROLL_SHIPPED = EnrollConfig(
    crops=(
        *((s, 0.5, 0.5) for s in (0.975, 0.9, 0.8, 0.75, 0.7)),
        *_off_centre(0.875, _INNER),
        *_off_centre(0.825, _INNER),
        *_off_centre(0.8, _INNER),
        *_off_centre(0.775, _INNER),
        *_at(0.9, _P4_INNER),
        *_at(0.85, _P4_INNER),
        *_at(0.8, _P4_INNER),
        *_at(0.75, _P4_INNER),
        *_at(0.875, _EDGES),
        *_at(0.8, _CORNER_GRID),
        *_HALVES,
    ),
    rotations=(-3.5, 3.5),
    filled_rotations=(-5.0, -2.0, 2.0, 5.0),
    dihedral=True,
    mirrored_crops=(
        *((s, 0.5, 0.5) for s in (0.9, 0.875, 0.85, 0.825)),
        *_at(0.9, _CORNER_GRID),
        *_at(0.875, _CORNER_GRID),
        *_at(0.85, _CORNER_GRID),
        *_at(0.825, _CORNER_GRID),
    ),
)
"""The shipped enrollment profile (``enroll``, at most 100 hashes): the full picture, its 7
quarter turns and flips, 5 centred crops (97.5, 90, 80, 75 and 70%), the inner 3x3 grid of
offsets at 87.5, 82.5, 80 and 77.5%, the inner 2x2 of a 4x4 grid at 90, 85, 80 and 75%, the
middles of the edges at 87.5%, the corners at 80%, the 50% corners and centre, 2 small rotations
cut to their inner rectangle and 4 with black corners, and crops of the mirrored picture
(``mcrop``): centred, and anchored in each corner, at 90, 87.5, 85 and 82.5%."""

ENROLL = ENROLL_SHIPPED

ENROLL_LIGHT = EnrollConfig(
    crops=(*_CENTRED, *_HALVES), rotations=_ROTATIONS, filled_rotations=_FILLED, dihedral=True
)
"""The lighter enrollment profile (``enroll-light``, 39 hashes): no off-centre crop but the 50%
corners; the full picture, its turns and flips, centred crops and small rotations."""

# The shipped query profile: issue 6's 9 crops at 90%, and the pictures found inside the upload
# (a plain photo has none, so it still gives about 20 hashes). Every query hash costs the
# partner's server an index search (about 0.1 ms each at 1M), so the wider crop grid, which
# buys tier D a few points at three times the hashes, is its own profile, `query-wide`.
QUERY_ISSUE6 = QueryConfig(
    dihedral=True,
    trim=True,
    quadrants=True,
    tile_dihedral=False,
    crops=tuple(_grid(0.9, _P3)),
    rectangles=8,
    nested=(2, 4),
)
_CORNERS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
QUERY = dataclasses.replace(
    QUERY_ISSUE6,
    crops=tuple(c for c in _grid(0.95, _P3) if c[1:] not in _CORNERS),
    mirrored_crops=tuple(c for c in _grid(0.95, _P3) if c[1:] in _CORNERS),
)
"""The shipped query profile: the picture and its trimmed content block(s) with their 8 rotations
and flips, its 4 quadrants (and their trimmed blocks), 9 crops of 95% of each side (the centre and
the middle of each edge as cut, the 4 corners mirrored: ``qmcrop``, which meet ``ENROLL``'s
mirrored crops), and up to 8 pictures found inside it (``picture_boxes``: a photo in a browser or
chat screenshot, or pasted over another photo), each as found and with its margins trimmed (and,
where a window's chrome runs across its top, the page below the chrome, trimmed), and up to 4 more
inside each of the first two (a photo inside a window inside a screenshot). The same number of
hashes as issue 6's query (``QUERY_ISSUE6``: 9 crops of 90%, none mirrored)."""
QUERY_WIDE = dataclasses.replace(
    QUERY_ISSUE6,
    crops=tuple(
        dict.fromkeys([*_grid(0.9, _P5), *_grid(0.95, _P3), *_grid(0.85, _P3), *_grid(0.8, _P3)])
    ),
)
"""``query-wide``: issue 6's query (its 9 crops of 90%) with 52 crops instead (5x5 at 90% of
each side, 3x3 at 95, 85 and 80%), for ``enroll-compact``: three times the index searches."""


# PIL's transposes for DIHEDRAL_NAMES (rotations counter-clockwise, as pdq_dihedral names them).
_DIHEDRAL_OPS = {
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "flip_v": Image.Transpose.FLIP_TOP_BOTTOM,
    "flip_h": Image.Transpose.FLIP_LEFT_RIGHT,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


def _usable(view: View) -> bool:
    return PDQ.meets_floor(view[1].quality)


def _crop(image: Image.Image, scale: float, x: float, y: float) -> Image.Image:
    w, h = image.size
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = round((w - cw) * x), round((h - ch) * y)
    return image.crop((left, top, left + cw, top + ch))


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    w, h = image.size
    out = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    # Largest centred rectangle of the same aspect inside the rotated frame: no black corners,
    # which would otherwise add edges that the re-uploaded picture does not have.
    a = math.radians(abs(degrees))
    s = 1 / (math.cos(a) + max(w / h, h / w) * math.sin(a))
    cw, ch = round(w * s), round(h * s)
    return out.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def enroll_views(image: Image.Image, config: EnrollConfig = ENROLL) -> list[View]:
    """The hashes to enroll for one picture: ``full`` first, then crops and rotations.

    Every view whose own PDQ quality is below the floor (``PDQ.meets_floor``) is left out: flat
    patches of unrelated pictures hash alike. A flat picture (its ``full`` hash below the floor)
    also gets no quarter turns and flips (``dih/*``) and no rotations with black corners
    (``rotfill*``): their qualities can pass the floor while they stay collision-prone (views of
    two unrelated flat pictures came out 6-28 bits apart, inside ``MATCH_DISTANCE``). A picture
    with no usable view gives an empty list: the caller enrolls it by its other signals.
    Deterministic: the same picture gives the same list.
    """
    full = pdq(image)
    flat = not PDQ.meets_floor(full.quality)
    views: list[View] = [("full", full)]
    for scale, x, y in config.crops:
        views.append((f"crop{scale:g}@{x:g},{y:g}", pdq(_crop(image, scale, x, y))))
    for degrees in config.rotations:
        views.append((f"rot{degrees:+g}", pdq(_rotate(image, degrees))))
    if config.dihedral and not flat:
        # The query side has the eight variants of pdq_dihedral for free, but they sit ~14 bits
        # from the hash of the transformed pixels; with a heavy re-encode on top that passes 31.
        # Hashing the transformed pixels here removes that error for the full picture.
        for name, op in _DIHEDRAL_OPS.items():
            views.append((f"dih/{name}", pdq(image.transpose(op))))
    if not flat:
        for degrees in config.filled_rotations:
            # Rotated in a frame of the same size with black corners, as a naive editor does.
            h = pdq(image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False))
            views.append((f"rotfill{degrees:+g}", h))
    if config.mirrored_crops:
        mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for scale, x, y in config.mirrored_crops:
            views.append((f"mcrop{scale:g}@{x:g},{y:g}", pdq(_crop(mirrored, scale, x, y))))
    return [v for v in views if _usable(v)]


# Trimming. A side is trimmed only if its outermost line is nearly one colour (95% of its pixels
# within 6 levels). Measured on the BSDS500 photos and their edits: 99% of the lines of JPEG'd
# borders, bars and collage gutters pass, and 3% of photo edges (flat skies) do.
# The cut then goes to the deepest line that is itself clean (90% of that colour, within 28
# levels to absorb JPEG ringing) such that the lines cut are, on average, 75% that colour: text
# and icons in a caption bar or app chrome pass, a photo does not. Rounds repeat (up to 6) so that
# a separator line, a status bar of another colour or a border inside a letterbox are peeled too.
_TRIM_START_TOLERANCE = 6
_TRIM_START_FRACTION = 0.95
_TRIM_TOLERANCE = 28
_TRIM_CLEAN = 0.9
_TRIM_MEAN = 0.75
_TRIM_ROUNDS = 6
_TRIM_MIN_KEEP = 0.2  # never keep less than 20% of a side: that is not a content block
_TRIM_MIN_CUT = 0.02  # a trim of under 2% of each side is no new view


def _edge_run(lines: np.ndarray) -> int:
    """How many leading lines of ``lines`` (lines x pixels x 3) to cut as border or chrome."""
    first = lines[0]
    colour = np.median(first, axis=0)
    if (np.abs(first - colour).max(axis=1) <= _TRIM_START_TOLERANCE).mean() < _TRIM_START_FRACTION:
        return 0
    limit = int(len(lines) * (1 - _TRIM_MIN_KEEP))
    # In blocks, stopping once no later line can bring the running mean back to _TRIM_MEAN
    # (each line adds at most 1): the same answer as measuring every line, without reading
    # most of a photo whose first line happens to be flat.
    parts: list[np.ndarray] = []
    done, total, block = 0, 0.0, 16
    while done < limit:
        end = min(limit, done + block)
        part = (np.abs(lines[done:end] - colour).max(axis=2) <= _TRIM_TOLERANCE).mean(axis=1)
        parts.append(part)
        total += float(part.sum())
        done = end
        deficit = _TRIM_MEAN * done - total
        if deficit > 0 and done + deficit / (1 - _TRIM_MEAN) > limit:
            break
        block *= 2
    near = np.concatenate(parts) if parts else np.zeros(0)
    mean_so_far = np.cumsum(near) / np.arange(1, len(near) + 1)
    ok = np.flatnonzero((near >= _TRIM_CLEAN) & (mean_so_far >= _TRIM_MEAN))
    return int(ok[-1]) + 1 if ok.size else 0


# A blurred, zoomed copy of the picture behind it ("fit to square" in many apps) is not flat, but
# has almost no detail: lines whose mean gradient is under a fifth of the picture's median are cut.
_BLUR_DETAIL = 0.2


def _blur_run(detail: np.ndarray, floor: float) -> int:
    """How many leading lines to cut as a blurred backdrop, given each line's mean gradient."""
    limit = int(len(detail) * (1 - _TRIM_MIN_KEEP))
    low = detail[:limit] < floor
    if not low.size or not low[0]:
        return 0
    mean_so_far = np.cumsum(low) / np.arange(1, len(low) + 1)
    ok = np.flatnonzero(low & (mean_so_far >= _TRIM_CLEAN))
    return int(ok[-1]) + 1 if ok.size else 0


def _blur_box(a: np.ndarray) -> Box | None:
    grey = a.mean(axis=2, dtype=np.float32)
    dx = np.abs(np.diff(grey, axis=1))
    dy = np.abs(np.diff(grey, axis=0))
    rows = dx.mean(axis=1)
    cols = dy.mean(axis=0)
    floor = _BLUR_DETAIL * float(np.median(np.concatenate([rows, cols])))
    h, w = grey.shape
    t, b = _blur_run(rows, floor), _blur_run(rows[::-1], floor)
    lft, r = _blur_run(cols, floor), _blur_run(cols[::-1], floor)
    box = (lft, t, w - r, h - b)
    if box[3] - box[1] < h * _TRIM_MIN_KEEP or box[2] - box[0] < w * _TRIM_MIN_KEEP:
        return None
    return box if _big_cut(box, w, h) else None


def content_boxes(image: Image.Image) -> list[Box]:
    """Candidate content blocks once uniform borders, bars and app chrome are trimmed.

    Each side is trimmed as ``_edge_run`` says, in rounds, until a round trims nothing. The box
    after the first round (the outer frame: letterbox, border, padding) and the box after the last
    (chrome inside chrome: a screenshot) are both returned where they differ, because a later round
    can also eat into a photo whose own edge is flat (a sky against a white app background).
    Empty when nothing worth a view is trimmed.
    """
    a = np.asarray(image, dtype=np.int16)
    h, w = a.shape[:2]
    box = (0, 0, w, h)
    found: list[Box] = []
    for _ in range(_TRIM_ROUNDS):
        left, top, right, bottom = box
        sub = a[top:bottom, left:right]
        t = _edge_run(sub)
        b = _edge_run(sub[::-1])
        lft = _edge_run(sub.transpose(1, 0, 2))
        r = _edge_run(sub.transpose(1, 0, 2)[::-1])
        if not (t or b or lft or r):
            break
        new = (left + lft, top + t, right - r, bottom - b)
        if new[3] - new[1] < h * _TRIM_MIN_KEEP or new[2] - new[0] < w * _TRIM_MIN_KEEP:
            break
        box = new
        if not found:
            found.append(box)
    if found and box != found[0]:
        found.append(box)
    found = [b for b in found if _big_cut(b, w, h)]
    if not found:
        blurred = _blur_box(a)
        if blurred is not None:
            found.append(blurred)
    return found


def _big_cut(box: Box, w: int, h: int) -> bool:
    left, top, right, bottom = box
    m = _TRIM_MIN_CUT
    return left > w * m or top > h * m or w - right > w * m or h - bottom > h * m


def content_box(image: Image.Image) -> Box | None:
    """The innermost content block of ``content_boxes``, or None where nothing is trimmed."""
    boxes = content_boxes(image)
    return boxes[-1] if boxes else None


# Pictures inside the upload. A photo shown in a browser, sent in a chat or pasted over another
# photo keeps its straight edges: each side is a line along which the grey level steps between two
# neighbouring pixels. ``picture_boxes`` finds such lines (columns and rows where steps that are a
# local maximum across the line pile up, well above the lines around them), and returns the
# rectangles whose four sides lie on them (or on the frame), strongest first. Uniform borders are
# not needed: the chrome above a desktop screenshot's dark margins, or an unrelated photo around a
# pasted one, no longer hides the picture. The search runs on a copy of at most 768 pixels a side.
_RECT_MAX_SIDE = 768
_RECT_STEP = 10.0  # grey levels between two neighbouring pixels
_RECT_LINES = 24  # strongest candidate lines per direction
_RECT_COVER = 0.6  # every side lies on a step along at least this share of its inner 80%
_RECT_CHANCE = 0.5  # the cover a line through texture reaches by chance
_RECT_MIN_SIDE = 0.15  # a picture spans at least this share of the upload's width and height
_RECT_RIM = 0.01  # lines this close to the frame are taken for the frame
_RECT_MIN_CUT = 0.02  # and differs from the whole upload by at least this share of a side


def _steps(g: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the grey level steps across ``axis`` by at least ``_RECT_STEP``, more than at the
    neighbouring pixels; and the same widened by one pixel across the line (a resize blurs the
    step), which is what the cover of a side is measured on."""
    d = np.abs(np.diff(g, axis=axis))
    before = np.roll(d, 1, axis=axis)
    after = np.roll(d, -1, axis=axis)
    ind = (d >= _RECT_STEP) & (d >= before) & (d >= after)
    return ind, ind | np.roll(ind, 1, axis=axis) | np.roll(ind, -1, axis=axis)


def _strong_lines(ind: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` lines (columns of ``ind``) with the most steps above their neighbourhood."""
    from numpy.lib.stride_tricks import sliding_window_view

    counts = ind.sum(axis=0).astype(np.float32)
    k = 15
    local = np.median(sliding_window_view(np.pad(counts, k, mode="edge"), 2 * k + 1), axis=1)
    score = counts - local
    picked: list[int] = []
    for i in np.argsort(-score, kind="stable"):
        if score[i] < 0.05 * ind.shape[0] or len(picked) >= n:
            break
        if all(abs(int(i) - p) > 2 for p in picked):
            picked.append(int(i))
    return np.asarray(sorted(picked), dtype=np.int64)


def _side_cover(
    prefix: np.ndarray, lines: np.ndarray, ends: np.ndarray, part: tuple[float, float]
) -> np.ndarray:
    """cover[i, a, b]: the share of line ``lines[i]`` between positions ``ends[a]`` and
    ``ends[b]`` that lies on steps, over the ``part`` (fractions) of that stretch
    (``prefix``: cumulative steps along the lines)."""
    lo, hi = ends[:, None], ends[None, :]
    start = np.clip(lo + ((hi - lo) * part[0]).astype(np.int64), 0, prefix.shape[0] - 1)
    stop = np.clip(lo + ((hi - lo) * part[1]).astype(np.int64), 0, prefix.shape[0] - 1)
    length = np.maximum(1, stop - start)
    p = prefix[:, lines]  # (positions + 1, lines)
    return (p[stop] - p[start]).transpose(2, 0, 1) / length[None]


# A side is measured on its inner 80% (rounded corners, a drop shadow), and must be on steps along
# each third of that too: a line of the background that runs on past the picture's corner, or a
# short piece of texture, does not make a side.
_RECT_PARTS = ((0.1, 0.9), (0.1, 0.37), (0.37, 0.63), (0.63, 0.9))
_RECT_THIRD_COVER = 0.3


def _covers(prefix: np.ndarray, lines: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """cover of the inner 80%, or 0 where a third of it falls below ``_RECT_THIRD_COVER``."""
    whole, *thirds = (_side_cover(prefix, lines, ends, part) for part in _RECT_PARTS)
    return np.where(np.minimum.reduce(thirds) >= _RECT_THIRD_COVER, whole, 0.0)


# Lines through texture cover 50-70% of a side with steps by chance, and among hundreds of
# rectangles some of them clear ``_RECT_COVER`` on all four sides (on plain photos, and around a
# pasted photo, where they outrank its true outline). What they lack is a change of picture: the
# mean colour of a thin strip just outside a true side differs from the strip just inside all
# along it, while across a line through one texture the two strips are alike. Each side must
# show at least this mean difference (grey levels, averaged over the channels and the side's inner
# 80%); the strips are 3 pixels wide and leave out the 2 pixels at the edge (blurred by resizing).
_RECT_CONTRAST = 20.0
_RECT_MEAN_CONTRAST = 35.0  # and its sides that are not the frame this much on average


def _contrasts(rgb: np.ndarray, lines: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """contrast[i, a, b]: the mean colour difference across the edge ``lines[i]`` (between
    columns ``lines[i] - 1`` and ``lines[i]`` of ``rgb``, rows x columns x channels) between
    rows ``ends[a]`` and ``ends[b]``."""
    w = rgb.shape[1]
    cs = np.concatenate([np.zeros_like(rgb[:, :1]), np.cumsum(rgb, axis=1)], axis=1)
    lo0, lo1 = np.clip(lines - 4, 0, w), np.clip(lines - 1, 0, w)
    hi0, hi1 = np.clip(lines + 1, 0, w), np.clip(lines + 4, 0, w)
    inside = (cs[:, lo1] - cs[:, lo0]) / np.maximum(1, lo1 - lo0)[None, :, None]
    outside = (cs[:, hi1] - cs[:, hi0]) / np.maximum(1, hi1 - hi0)[None, :, None]
    diff = np.abs(inside - outside).mean(axis=2)  # (rows, lines)
    prefix = np.vstack([np.zeros((1, len(lines))), np.cumsum(diff, axis=0)])
    return _side_cover(prefix, np.arange(len(lines)), ends, _RECT_PARTS[0])


def picture_boxes(image: Image.Image, limit: int = 4) -> list[Box]:
    """Rectangles inside ``image`` that are likely a picture of their own (a photo in a
    screenshot, a photo pasted over another), strongest first, at most ``limit``.

    A rectangle qualifies when each of its sides is the frame or a line of steps covering at
    least ``_RECT_COVER`` of the side; its strength is the length of its sides on steps.
    """
    w0, h0 = image.size
    f = min(1.0, _RECT_MAX_SIDE / max(w0, h0))
    small = image.resize((max(1, round(w0 * f)), max(1, round(h0 * f))), Image.Resampling.BILINEAR)
    rgb = np.asarray(small.convert("RGB"), dtype=np.float32)
    g = np.asarray(small.convert("L"), dtype=np.float32)
    h, w = g.shape
    if h < 16 or w < 16:
        return []
    sv, sv_wide = _steps(g, 1)  # (h, w - 1): a step between columns x and x + 1
    sh, sh_wide = _steps(g, 0)  # (h - 1, w)
    pv = np.vstack([np.zeros((1, w - 1), np.int32), np.cumsum(sv_wide, axis=0, dtype=np.int32)])
    ph = np.vstack([np.zeros((1, h - 1), np.int32), np.cumsum(sh_wide.T, axis=0, dtype=np.int32)])
    lx, ly = _strong_lines(sv, _RECT_LINES), _strong_lines(sh.T, _RECT_LINES)
    # Lines hugging the frame are the frame (a photo's own dark rim, JPEG edge blocks).
    lx = lx[(lx + 1 > _RECT_RIM * w) & (lx + 1 < (1 - _RECT_RIM) * w)]
    ly = ly[(ly + 1 > _RECT_RIM * h) & (ly + 1 < (1 - _RECT_RIM) * h)]
    # Candidate sides: the frame, then the lines (a step after column x is an edge at x + 1).
    ex = np.concatenate([[0], lx + 1, [w]])
    ey = np.concatenate([[0], ly + 1, [h]])
    nx, ny = len(ex), len(ey)
    cv = np.ones((nx, ny, ny))
    ch = np.ones((ny, nx, nx))
    cv[1:-1] = _covers(pv, lx, ey)  # cv[i, c, d]: line x_i between rows y_c and y_d
    ch[1:-1] = _covers(ph, ly, ex)
    kx = np.full((nx, ny, ny), np.inf)  # the frame needs no contrast
    ky = np.full((ny, nx, nx), np.inf)
    kx[1:-1] = _contrasts(rgb, lx + 1, ey)
    ky[1:-1] = _contrasts(rgb.transpose(1, 0, 2), ly + 1, ex)
    real_x = np.r_[0.0, np.ones(nx - 2), 0.0]
    real_y = np.r_[0.0, np.ones(ny - 2), 0.0]
    a, b, c, d = np.ix_(np.arange(nx), np.arange(nx), np.arange(ny), np.arange(ny))
    left, right = cv[a, c, d], cv[b, c, d]
    top, bottom = ch[c, a, b], ch[d, a, b]
    ok = (a < b) & (c < d)
    ok &= (ex[b] - ex[a] >= _RECT_MIN_SIDE * w) & (ey[d] - ey[c] >= _RECT_MIN_SIDE * h)
    ok &= np.minimum(np.minimum(left, right), np.minimum(top, bottom)) >= _RECT_COVER
    kl, kr, kt, kb = kx[a, c, d], kx[b, c, d], ky[c, a, b], ky[d, a, b]
    ok &= np.minimum(np.minimum(kl, kr), np.minimum(kt, kb)) >= _RECT_CONTRAST
    sides = real_x[a] + real_x[b] + real_y[c] + real_y[d]
    finite = [np.where(np.isinf(k), 0.0, k) for k in (kl, kr, kt, kb)]
    ok &= sum(finite) >= _RECT_MEAN_CONTRAST * np.maximum(sides, 1)
    # Strength: the length of the sides that lie on steps (frame sides count nothing), so that a
    # long, straight outline outranks the short ones that texture makes by chance.
    # Each side counts by how far its cover exceeds what texture gives by chance (about half).
    width, height = ex[b] - ex[a], ey[d] - ey[c]
    lean = _RECT_CHANCE
    strength = ((left - lean) * real_x[a] + (right - lean) * real_x[b]) * height
    strength = strength + ((top - lean) * real_y[c] + (bottom - lean) * real_y[d]) * width
    ok &= strength > 0
    idx = np.flatnonzero(ok)
    # Two rankings, taken in turn: by the length on steps (long outlines: a pasted photo), and by
    # the mean cover of the sides that are not the frame (a photo touching the frame, whose other
    # sides are short but clean).
    mean_cover = (left * real_x[a] + right * real_x[b] + top * real_y[c] + bottom * real_y[d]) / (
        np.maximum(sides, 1)
    )
    by_length = idx[np.argsort(-strength.ravel()[idx], kind="stable")]
    by_cover = idx[np.argsort(-mean_cover.ravel()[idx], kind="stable")]
    order = [int(v) for pair in zip(by_length, by_cover, strict=True) for v in pair]
    out: list[Box] = []
    for flat in order:
        ia, ib, ic, idd = np.unravel_index(flat, ok.shape)
        x0, x1, y0, y1 = int(ex[ia]), int(ex[ib]), int(ey[ic]), int(ey[idd])
        # Each side to the pixel where its own stretch steps most often (a line's position
        # comes from its whole length, which may hold other outlines); a pixel off is ~1% of a
        # small picture, enough to move PDQ by tens of bits.
        x0, x1 = (_refine(sv, x, y0, y1) if 0 < x < w else x for x in (x0, x1))
        y0, y1 = (_refine(sh.T, y, x0, x1) if 0 < y < h else y for y in (y0, y1))
        box = (round(x0 / f), round(y0 / f), min(w0, round(x1 / f)), min(h0, round(y1 / f)))
        if not _big_cut_rect(box, w0, h0) or any(_alike(box, o) for o in out):
            continue
        out.append(box)
        if len(out) >= limit:
            break
    return out


def _refine(steps: np.ndarray, edge: int, lo: int, hi: int) -> int:
    """The edge among ``edge - 1 .. edge + 1`` with the most steps between ``lo`` and ``hi``
    (``steps[:, i]``: a step between pixel ``i`` and ``i + 1``, an edge at ``i + 1``)."""
    best, best_count = edge, -1
    margin = (hi - lo) // 10
    for e in (edge, edge - 1, edge + 1):
        if 1 <= e <= steps.shape[1]:
            count = int(steps[lo + margin : hi - margin, e - 1].sum())
            if count > best_count:
                best, best_count = e, count
    return best


def _alike(a: Box, b: Box) -> bool:
    """Boxes whose four sides are within 2 pixels of each other: one outline found twice.
    (Suppressing boxes that share only three sides loses the true outline to a stronger
    variant that runs on along a line of the background.)"""
    return sum(abs(p - q) <= 2 for p, q in zip(a, b, strict=True)) >= _RECT_ALIKE


_RECT_ALIKE = 4


def _big_cut_rect(box: Box, w: int, h: int) -> bool:
    left, top, right, bottom = box
    m = _RECT_MIN_CUT
    return left > w * m or top > h * m or w - right > w * m or h - bottom > h * m


# A browser window over a wallpaper (issue 14): the finder finds the window, but inside it the
# chrome (tab strip, address bar, bookmarks) spans the window's width above the page, so the
# page's dark side margins are never trimmed (their columns hold chrome too), and the photo's own
# outline is short beside the window's. The chrome is a band of UI rows at the top: flat colour
# with a little text and a few icons, ending where an edge crosses the whole width (the page's
# top). Cut off, the page is a letterboxed photo that ``content_box`` trims.
_CHROME_FLAT = 4.0  # grey levels between neighbouring pixels of a flat stretch
_CHROME_FLAT_MEAN = 0.85  # share of flat pixel pairs in the band's rows, on average
_CHROME_EDGE = 10.0  # grey levels across the page's top edge
_CHROME_EDGE_WIDTH = 0.8  # share of the columns that step at the page's top edge
_CHROME_MAX = 0.35  # the chrome is at most this share of the window's height
_CHROME_MIN = 0.03  # and at least this share


def _chrome_band(picture: Image.Image) -> int:
    """How many top rows of ``picture`` are window chrome (0 where none is seen)."""
    g = np.asarray(picture.convert("L"), dtype=np.float32)
    h, w = g.shape
    limit = int(h * _CHROME_MAX)
    if limit < 4 or w < 16:
        return 0
    top = g[: limit + 2]
    flat = (np.abs(np.diff(top, axis=1)) <= _CHROME_FLAT).mean(axis=1)
    mean_flat = np.cumsum(flat) / np.arange(1, len(flat) + 1)
    # An edge between rows b - 1 and b, or blurred over row b (a resized screenshot).
    one = np.abs(top[1:-1] - top[:-2]) >= _CHROME_EDGE  # one[b - 1]: rows b - 1 and b
    two = np.abs(top[2:] - top[:-2]) >= _CHROME_EDGE  # two[b - 1]: rows b - 1 and b + 1
    edge = (one | two).mean(axis=1)
    for b in range(limit, max(2, int(h * _CHROME_MIN)) - 1, -1):
        if edge[b - 1] >= _CHROME_EDGE_WIDTH and mean_flat[b - 1] >= _CHROME_FLAT_MEAN:
            return b
    return 0


# A found box is often a pixel off the window's true side, and that one line of wallpaper (or of
# the window's rim) stops ``content_box`` from trimming the margins on that side.
_TRIM_SLACK = 4


def _page_box(picture: Image.Image, top: int) -> Box | None:
    """The content of ``picture`` below row ``top`` with its uniform margins trimmed, looking
    past up to ``_TRIM_SLACK`` stray lines on each side; None where no margin is trimmed and
    ``top`` is 0."""
    w, h = picture.size
    e = _TRIM_SLACK
    if w <= 4 * e or h - top <= 4 * e:
        return None
    plain = content_box(picture.crop((0, top, w, h)))
    inner = content_box(picture.crop((e, top + e, w - e, h - e)))
    if inner is None:
        box = (0, top, w, h) if top else None
    else:
        left, t, right, bottom = inner
        # A side whose margin is trimmed keeps the trim; the others keep their stray lines too
        # (they may be the photo's own edge).
        box = (
            e + left if left else 0,
            top + e + t if t else top,
            e + right if right < w - 2 * e else w,
            top + e + bottom if bottom < h - top - 2 * e else h,
        )
    if plain is None:
        return box
    # A margin thinner than the lines looked past (a white frame a few pixels wide) is trimmed by
    # the trim itself: each side goes as deep as either trim goes.
    plain = (plain[0], top + plain[1], plain[2], top + plain[3])
    if box is None:
        return plain
    deeper = (
        max(box[0], plain[0]),
        max(box[1], plain[1]),
        min(box[2], plain[2]),
        min(box[3], plain[3]),
    )
    # Two trims that ate into the photo from opposite sides can leave little or nothing between
    # them: then the trim alone, as before.
    keep_w, keep_h = _TRIM_MIN_KEEP * w, _TRIM_MIN_KEEP * (h - top)
    if deeper[2] - deeper[0] < keep_w or deeper[3] - deeper[1] < keep_h:
        return plain
    return deeper


def _hash_view(name: str, image: Image.Image, dihedral: bool) -> list[View]:
    if not dihedral:
        h = pdq(image)
        return [(name, h)]
    variants = pdq_dihedral(image)
    return [(name if v == "original" else f"{name}/{v}", h) for v, h in variants.items()]


def picture_views(image: Image.Image, config: QueryConfig = QUERY) -> list[View]:
    """The views of the pictures found inside ``image`` (``pic1``, ...): each as found
    (``pic1``), with its margins trimmed (``pic1t``), where it is a window with chrome across its
    top the page below the chrome, trimmed (``pic1w``), and the pictures found again inside the
    first ``config.nested[0]`` (``pic1/1``, ...)."""
    views: list[View] = []
    for k, box in enumerate(picture_boxes(image, config.rectangles) if config.rectangles else []):
        picture = image.crop(box)
        views += [v for v in _hash_view(f"pic{k + 1}", picture, False) if _usable(v)]
        inner = _page_box(picture, 0)  # the margins left around a photo in a screenshot
        if inner is not None:
            views += [
                v for v in _hash_view(f"pic{k + 1}t", picture.crop(inner), False) if _usable(v)
            ]
        band = _chrome_band(picture)
        page = _page_box(picture, band) if band else None
        if page is not None:
            shown = picture.crop(page)
            views += [v for v in _hash_view(f"pic{k + 1}w", shown, False) if _usable(v)]
        if k < config.nested[0]:
            for j, box2 in enumerate(picture_boxes(picture, config.nested[1])):
                name = f"pic{k + 1}/{j + 1}"
                views += [v for v in _hash_view(name, picture.crop(box2), False) if _usable(v)]
    return views


def query_views(image: Image.Image, config: QueryConfig = QUERY) -> list[View]:
    """The hashes to look up for one uploaded picture: ``full`` first, then the other views.

    ``full`` is the plain PDQ hash, so a service that only knows plain PDQ still gets it first.
    """
    views = _hash_view("full", image, config.dihedral)
    if config.trim:
        for k, box in enumerate(content_boxes(image)):
            name = "trim" if k == 0 else f"trim{k + 1}"
            trimmed = image.crop(box)
            views += [v for v in _hash_view(name, trimmed, config.dihedral) if _usable(v)]
    # Tiles are cut from the whole picture, not from a trimmed block: a trim can eat into a flat
    # edge of one cell of a collage and shift every tile. Each tile is hashed as cut and, where
    # it has one, trimmed on its own (the gutters of a collage).
    base = image
    w, h = base.size
    tiles: list[tuple[str, Box]] = []
    if config.quadrants:
        tiles += [
            ("q00", (0, 0, w // 2, h // 2)),
            ("q10", (w // 2, 0, w, h // 2)),
            ("q01", (0, h // 2, w // 2, h)),
            ("q11", (w // 2, h // 2, w, h)),
        ]
    if config.halves:
        tiles += [
            ("left", (0, 0, w // 2, h)),
            ("right", (w // 2, 0, w, h)),
            ("top", (0, 0, w, h // 2)),
            ("bottom", (0, h // 2, w, h)),
        ]
    for name, box in tiles:
        tile = base.crop(box)
        views += [v for v in _hash_view(name, tile, config.tile_dihedral) if _usable(v)]
        inner = content_box(tile)  # the gutters of a collage (or a flat edge of the photo)
        if inner is not None:
            trimmed = tile.crop(inner)
            views += [
                v for v in _hash_view(f"{name}t", trimmed, config.tile_dihedral) if _usable(v)
            ]
    views += picture_views(image, config)
    for scale, x, y in config.crops:
        view = (f"qcrop{scale:g}@{x:g},{y:g}", pdq(_crop(base, scale, x, y)))
        if _usable(view):
            views.append(view)
    for scale, x, y in config.mirrored_crops:
        # The crop's mirror from the crop's own PDQ pass: PDQ's DCT gives the flips for free.
        view = (f"qmcrop{scale:g}@{x:g},{y:g}", pdq_dihedral(_crop(base, scale, x, y))["flip_h"])
        if _usable(view):
            views.append(view)
    return views


def view_names(config: EnrollConfig) -> list[str]:
    """The names of the views ``enroll_views`` makes with ``config`` (before any is dropped)."""
    names = ["full"]
    names += [f"crop{scale:g}@{x:g},{y:g}" for scale, x, y in config.crops]
    names += [f"rot{degrees:+g}" for degrees in config.rotations]
    names += [f"dih/{name}" for name in _DIHEDRAL_OPS] if config.dihedral else []
    names += [f"rotfill{degrees:+g}" for degrees in config.filled_rotations]
    names += [f"mcrop{scale:g}@{x:g},{y:g}" for scale, x, y in config.mirrored_crops]
    return names


def matches(
    query: Iterable[View], enrolled: Iterable[View], distance: int = MATCH_DISTANCE
) -> bool:
    """The views' decision rule: any query hash within ``distance`` of any enrolled hash."""
    stored = [h for _, h in enrolled]
    return any(q - e <= distance for _, q in query for e in stored)


PROFILES: dict[str, Callable[[Image.Image], list[View]] | None] = {
    "plain": None,
    "enroll": enroll_views,
    "enroll-wide": functools.partial(enroll_views, config=ENROLL_WIDE),
    "enroll-compact": functools.partial(enroll_views, config=ENROLL_COMPACT),
    "enroll-light": functools.partial(enroll_views, config=ENROLL_LIGHT),
    "query": query_views,
    "query-wide": functools.partial(query_views, config=QUERY_WIDE),
}
"""Hashing profiles by name: ``plain`` (no views), ``enroll`` (the shipped enrollment views),
``enroll-wide`` (issue 6's 223), ``enroll-compact`` (95), ``enroll-light`` (39) and
``query``."""


def check_profile(profile: str) -> Callable[[Image.Image], list[View]] | None:
    """The view function of a profile name (None for ``plain``), or raise ``InvalidInput``."""
    try:
        return PROFILES[profile]
    except KeyError:
        raise InvalidInput(
            f"profile must be one of {', '.join(PROFILES)}; got {profile!r}", field="profile"
        ) from None
