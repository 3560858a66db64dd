"""The query side's picture finder (``picture_boxes``) on tiers G and H and on plain photos.

``python -m bench.quality.finder_study CACHE [--originals 4] [--plain 40]``: the first run makes
the tier G and H edits of every Nth design original, enrolls the originals with ``ENROLL``, and
hashes the query views that do not come from the finder (``rectangles=0``), all saved to CACHE
(outside the repository). Every run then hashes only the finder's views of those edits with the
code as it stands, and prints per family the pair recall with and without them, and the query
hashes per plain photo (the originals themselves and every Nth clothing distractor): how the
finder was tuned (issue 14) without redoing the whole benchmark for each try.

``--family NAME`` (repeatable) scores only those families. ``--second-set`` uses the second photo
set (``python -m bench.quality.second_set``) as the originals, with the seed the benchmark gives
it, so that a change tuned on the design photos is checked on photos nobody tuned on; give it a
CACHE of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.quality.collect import edited
from bench.quality.edits import EDITS
from bench.quality.second_set import default_folder
from matcher.hashing import decode_image, ordered_map
from matcher.hashing import views as V

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
# The plain photos' other views do not depend on the finder: count only its views unless asked.
FINDER_ONLY = os.environ.get("FINDER_STUDY_ALL") != "1"
_NO_FINDER = dataclasses.replace(V.QUERY, rectangles=0, nested=(0, 0))


def _bits(views: Sequence[tuple[str, object]]) -> np.ndarray:
    rows = [h.value for _, h in views]  # type: ignore[attr-defined]
    if not rows:
        return np.zeros((0, 4), dtype=np.uint64)
    return np.frombuffer(b"".join(rows), dtype=">u8").astype(np.uint64).reshape(-1, 4)


def _min_distance(q: np.ndarray, e: np.ndarray) -> int:
    if not len(q) or not len(e):
        return 257
    x = q[:, None, :] ^ e[None, :, :]
    return int(np.unpackbits(x.view(np.uint8), axis=-1).sum(axis=-1).min())


def _finder_views(image: object) -> list[tuple[str, object]]:
    """The views ``query_views`` adds through the finder: everything named ``pic...``."""
    return V.picture_views(image, V.QUERY)  # type: ignore[arg-type]


def _make(args: tuple[int, Sequence[Path]], edits: Sequence[int], seed: int) -> list[object]:
    index, paths = args
    out = [
        (index, k, data, _bits(V.query_views(decode_image(data), _NO_FINDER)))
        for k, data in edited(index, paths, edits, seed)
    ]
    enrolled = _bits(V.enroll_views(decode_image(paths[index].read_bytes())))
    return [out, enrolled]


def _finder_of(
    item: tuple[int, int, bytes, np.ndarray, np.ndarray],
) -> list[tuple[str, int]]:
    _, _, data, _, enrolled = item
    views = _finder_views(decode_image(data))
    return [
        (name, _min_distance(_bits([v]), enrolled))
        for name, v in zip([n for n, _ in views], views, strict=True)
    ]


def _keep(name: str, rectangles: int, nested: tuple[int, int]) -> bool:
    """Whether a finder view ``pic{k}[t][/{j}]`` exists under a smaller configuration."""
    head, _, tail = name.partition("/")
    k = int(head[3:].rstrip("tw"))
    if k > rectangles:
        return False
    return not tail or (k <= nested[0] and int(tail) <= nested[1])


_CONFIGS = (
    (8, (2, 4)),
    (8, (1, 4)),
    (8, (0, 0)),
    (6, (1, 3)),
    (4, (1, 4)),
    (4, (2, 2)),
    (4, (0, 0)),
    (3, (1, 3)),
    (2, (1, 3)),
)


def _plain_count(path: Path) -> tuple[int, int]:
    image = decode_image(path.read_bytes())
    views = V.picture_views(image, V.QUERY) if FINDER_ONLY else V.query_views(image, V.QUERY)
    names = [n for n, _ in views if n.startswith("pic")]
    return [len(views) - len(names), *(sum(_keep(n, r, c) for n in names) for r, c in _CONFIGS)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality.finder_study", description=__doc__
    )
    parser.add_argument("cache", type=Path)
    parser.add_argument("--originals", type=int, default=4)
    parser.add_argument("--plain", type=int, default=40, help="every Nth clothing distractor")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--every", type=int, default=1, help="use every Nth edit only")
    parser.add_argument(
        "--family", action="append", default=[], help="only these edit families (repeatable)"
    )
    parser.add_argument(
        "--second-set",
        action="store_true",
        help="the second photo set (python -m bench.quality.second_set) instead of every Nth "
        "design original, with the benchmark's seed for it (SEED + 1); CACHE is its own file",
    )
    args = parser.parse_args(argv)
    # The workers import the functions by module name, which ``__main__`` is not.
    from bench.quality import finder_study as me

    if args.second_set:
        originals = sorted(default_folder().glob("*.jpg"))
        seed = args.seed + 1
    else:
        originals = sorted((DATA / "photos" / "bsds500").rglob("*.jpg"))[:: args.originals]
        seed = args.seed
    edits = [i for i, e in enumerate(EDITS) if e.tier in ("G", "H")]
    if args.cache.exists():
        with args.cache.open("rb") as f:
            items, enrolled = pickle.load(f)
    else:
        fn = functools.partial(me._make, edits=edits, seed=seed)
        items, enrolled = [], []
        for out, e in ordered_map(
            fn, [(i, originals) for i in range(len(originals))], jobs=args.jobs
        ):
            items += out
            enrolled.append(e)
        with args.cache.open("wb") as f:
            pickle.dump((items, enrolled), f)
    start = time.perf_counter()
    items = [it for it in items if not args.family or EDITS[it[1]].name in args.family]
    items = items[:: args.every]
    work = [(o, k, data, rest, enrolled[o]) for o, k, data, rest in items]
    found = list(ordered_map(me._finder_of, work, jobs=args.jobs))
    took = time.perf_counter() - start
    print(f"finder views of {len(work)} edits in {took:.0f} s", file=sys.stderr)
    by_family: dict[str, list[list[float]]] = {}
    for (o, k, _, rest), named in zip(items, found, strict=True):
        base = _min_distance(rest, enrolled[o]) <= V.MATCH_DISTANCE
        row = [float(base)]
        for r, n in _CONFIGS:
            kept = [d for name, d in named if _keep(name, r, n)]
            row += [float(base or min(kept, default=257) <= V.MATCH_DISTANCE), float(len(kept))]
        by_family.setdefault(EDITS[k].name, []).append(row)
    heads = " | ".join(f"{r} boxes, nested {n}" for r, n in _CONFIGS)
    print(f"| family | without finder | {heads} |")
    print("|---|---:|" + "---:|" * len(_CONFIGS))
    for name, rows in by_family.items():
        a = np.asarray(rows)
        cells = " | ".join(
            f"{100 * a[:, 1 + 2 * i].mean():.0f} ({a[:, 2 + 2 * i].mean():.0f})"
            for i in range(len(_CONFIGS))
        )
        print(f"| {name} | {100 * a[:, 0].mean():.0f} | {cells} |")
    if not args.skip_plain:
        plain = (
            list(originals) + sorted((DATA / "photos" / "clothing").glob("*.jpg"))[:: args.plain]
        )
        counts = np.asarray(list(ordered_map(me._plain_count, plain, jobs=args.jobs)), dtype=float)
        for label, part in (
            ("originals", counts[: len(originals)]),
            ("distractors", counts[len(originals) :]),
        ):
            cells = ", ".join(
                f"{r}/{c}: mean {part[:, 1 + i].mean():.1f} max {part[:, 1 + i].max():.0f}"
                for i, (r, c) in enumerate(_CONFIGS)
            )
            print(
                f"plain {label} ({len(part)}), finder hashes (other views: mean "
                f"{part[:, 0].mean():.1f}): {cells}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
