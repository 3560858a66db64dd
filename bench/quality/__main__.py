"""The detection-quality benchmark of issue 6: ``make bench-quality`` (``python -m bench.quality``).

Enrolls the 300 BSDS500 originals, queries every fixed-seed edit of each and the 3,781 clothing
distractors, and writes ``bench/results/quality.md`` with its plots. Plain PDQ (one hash per image,
distance 31) is the baseline row; the shipped view profiles of ``matcher.hashing.views`` are the
other. Generated pictures stay in memory; nothing is cached.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.quality.collect import (
    HashSet,
    collect_distractors,
    collect_edits,
    collect_originals,
)
from bench.quality.edits import EDITS, apply_edit
from bench.quality.frontier import ISSUE14_FIRST, evaluate_frontier, frontier_rows
from bench.quality.report import (
    Ablation,
    Configuration,
    ablate,
    edit_rows,
    evaluate,
    false_rows,
    tier_rows,
    write_report,
)
from bench.quality.second_set import default_folder
from matcher.hashing import decode_image, pdq
from matcher.hashing.views import (
    ENROLL,
    ENROLL_COMPACT,
    ENROLL_LIGHT,
    ENROLL_WIDE,
    MATCH_DISTANCE,
    QUERY,
    QUERY_ISSUE6,
    EnrollConfig,
    QueryConfig,
    enroll_views,
    query_views,
    view_names,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))

BASELINE = Configuration(
    "plain PDQ",
    enroll=lambda name: name == "full",
    query=lambda name: name == "full",
    distance=31,
    description="one PDQ hash per original, one per query, match at distance <= 31 "
    "(what Meta's HMA and StopNCII do).",
)


_QUERY_CROPS = frozenset(f"qcrop{s:g}@{x:g},{y:g}" for s, x, y in QUERY.crops)


def _extra_query(name: str) -> bool:
    """Query views collected only for the frontier (not in the shipped query profile)."""
    return name.startswith("qcrop") and name not in _QUERY_CROPS


def _union(*configs: EnrollConfig) -> EnrollConfig:
    """One enrollment config holding every view of ``configs`` (each profile of the frontier
    is then a subset of it, picked by view name)."""
    return dataclasses.replace(
        configs[0],
        crops=tuple(dict.fromkeys(c for config in configs for c in config.crops)),
        mirrored_crops=tuple(dict.fromkeys(c for config in configs for c in config.mirrored_crops)),
    )


# The views collected: every enrollment profile's (the frontier picks each by name), and the
# shipped query profile plus issue 6's 9 crops of 90% (the profiles shipped before issue 14 are
# a frontier row). Wider query crop grids triple the index searches per upload, which issue 15
# found to be the server's bottleneck, so they are no longer collected here.
COLLECTED_ENROLL = _union(ENROLL_WIDE, ENROLL, ENROLL_COMPACT, ENROLL_LIGHT, ISSUE14_FIRST)
COLLECTED_QUERY = dataclasses.replace(
    QUERY, crops=tuple(dict.fromkeys([*QUERY.crops, *QUERY_ISSUE6.crops]))
)

_SHIPPED_ENROLL = frozenset(view_names(ENROLL))

SHIPPED = Configuration(
    "views (shipped)",
    enroll=lambda name: name in _SHIPPED_ENROLL,
    query=lambda name: not _extra_query(name),
    distance=MATCH_DISTANCE,
    description="`matcher hash --profile enroll` for the originals and `--profile query` for "
    f"every query (`matcher.hashing.views`); a match is any query hash within {MATCH_DISTANCE} "
    "of any hash enrolled for the image.",
)


def _timing(originals: list[Path], samples: int, seed: int) -> dict[str, float]:
    """Seconds per picture of each hashing step, one process, on a sample of pictures."""
    images = [decode_image(p.read_bytes()) for p in originals[:samples]]
    queries = []
    rng = np.random.default_rng(seed)
    for i, image in enumerate(images):
        edit = EDITS[int(rng.integers(len(EDITS)))]
        data = apply_edit(edit, image, seed + i, images[:i] + images[i + 1 :])
        queries.append(decode_image(data))

    def clock(fn, items) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - start) / len(items)

    return {
        "plain": (clock(pdq, images) + clock(pdq, queries)) / 2,
        "enroll": clock(enroll_views, images),
        "query": clock(query_views, queries),
    }


def _ablations(bank: HashSet, queries: HashSet, origin: np.ndarray) -> list[Ablation]:
    """Recall as the parts of the shipped profiles are added one after another."""

    def head(name: str) -> str:
        return name.split("/")[0]

    def centred(name: str) -> bool:
        return head(name) in ("full", "dih") or name.endswith("@0.5,0.5") or name.startswith("rot")

    steps = [
        ("plain PDQ", lambda n: n == "full", lambda n: n == "full"),
        ("+ query: 8 rotations/flips", lambda n: n == "full", lambda n: head(n) == "full"),
        (
            "+ query: trimmed borders/chrome",
            lambda n: n == "full",
            lambda n: head(n) in ("full", "trim", "trim2"),
        ),
        (
            "+ query: quadrants",
            lambda n: n == "full",
            lambda n: not n.startswith(("qcrop", "pic")),
        ),
        (
            "+ enroll: 8 rotations/flips",
            lambda n: head(n) in ("full", "dih"),
            lambda n: not n.startswith(("qcrop", "pic")),
        ),
        (
            "+ enroll: centred crops, small rotations",
            centred,
            lambda n: not n.startswith(("qcrop", "pic")),
        ),
        (
            "+ enroll: off-centre crops",
            SHIPPED.enroll,
            lambda n: not n.startswith(("qcrop", "pic")),
        ),
        (
            "+ query: 90% crops",
            SHIPPED.enroll,
            lambda n: not n.startswith("pic") and not _extra_query(n),
        ),
        ("+ query: pictures found inside (shipped)", SHIPPED.enroll, SHIPPED.query),
    ]
    return [ablate(name, e, q, bank, queries, origin) for name, e, q in steps]


def _drop_originals(
    queries: HashSet, origin: np.ndarray, edit_index: np.ndarray, drop: list[int]
) -> tuple[HashSet, np.ndarray, np.ndarray]:
    """The queries made from originals other than ``drop``."""
    keep = ~np.isin(origin, drop)
    remap = np.full(len(origin), -1)
    remap[keep] = np.arange(int(keep.sum()))
    rows = keep[queries.owner]
    sub = HashSet(
        queries.hashes[rows],
        remap[queries.owner[rows]],
        queries.name[rows],
        queries.names,
        int(keep.sum()),
    )
    return sub, origin[keep], edit_index[keep]


def _plain_timing(originals: list[Path]) -> dict[str, float]:
    images = [decode_image(p.read_bytes()) for p in originals[:40]]
    start = time.perf_counter()
    for image in images:
        pdq(image)
    return {"plain": (time.perf_counter() - start) / len(images)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("-j", "--jobs", type=int, default=2, help="hashing processes (2)")
    parser.add_argument("--seed", type=int, default=6, help="seed of the edits (6)")
    parser.add_argument("--originals", type=int, default=0, help="use every Nth original only")
    parser.add_argument("--distractors", type=int, default=0, help="use every Nth distractor")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--hashes",
        type=Path,
        help="save the collected hashes to this file (outside the repository), or load them "
        "from it if it exists, to redo only the matching and the report",
    )
    parser.add_argument(
        "--second-set",
        type=Path,
        help="folder of the second photo set (default: $MATCHER_SECOND_SET or "
        "~/.cache/matcher/second-set; build it with python -m bench.quality.second_set)",
    )
    parser.add_argument("--note", action="append", default=[], help="a line for the header")
    parser.add_argument(
        "--baseline-only", action="store_true", help="plain PDQ only (quick: one hash per image)"
    )
    parser.add_argument(
        "--browser-enroll",
        action="store_true",
        help="also enroll the originals with the web app's hashing worker in headless Chromium "
        "(needs chromium and playwright) and compare recall per tier with the Python-made "
        "enrollment on the same queries; writes bench/results/browser-quality.md",
    )
    args = parser.parse_args(argv)

    photos = DATA / "photos"
    if not (photos / "bsds500").is_dir() or not (photos / "clothing").is_dir():
        print(f"bench-quality: test data not found at {photos} (set MATCHER_TEST_DATA)")
        return 2
    originals = sorted((photos / "bsds500").rglob("*.jpg"))[:: max(1, args.originals)]
    distractors = sorted((photos / "clothing").rglob("*.jpg"))[:: max(1, args.distractors)]
    second_dir = args.second_set or default_folder()
    second_paths = sorted(second_dir.glob("*.jpg")) if second_dir.is_dir() else []
    second_names = [p.stem for p in second_paths]
    if not second_paths:
        print(
            f"bench-quality: no second photo set at {second_dir} "
            "(build it: python -m bench.quality.second_set)",
            file=sys.stderr,
        )

    started = time.time()
    loaded = bool(args.hashes and args.hashes.exists())
    if loaded:
        with args.hashes.open("rb") as f:
            bank, queries, origin, edit_index, dis, timing, second = pickle.load(f)
    else:
        print(f"enrolling {len(originals)} originals...", file=sys.stderr, flush=True)
        enroll, query = COLLECTED_ENROLL, COLLECTED_QUERY
        if args.baseline_only:
            enroll = EnrollConfig(crops=(), rotations=())
            query = QueryConfig(dihedral=False, trim=False, quadrants=False)
        bank = collect_originals(originals, enroll, args.jobs)
        print(f"querying {len(EDITS)} edits of each...", file=sys.stderr, flush=True)
        queries, origin, edit_index = collect_edits(
            originals,
            query,
            args.jobs,
            args.seed,
            progress=lambda i: (
                print(f"  {i}/{len(originals)}", file=sys.stderr, flush=True)
                if i % 25 == 0
                else None
            ),
        )
        print(f"querying {len(distractors)} distractors...", file=sys.stderr, flush=True)
        dis = collect_distractors(distractors, query, args.jobs)
        print("timing and matching...", file=sys.stderr, flush=True)
        timing = (
            _timing(originals, 40, args.seed)
            if not args.baseline_only
            else _plain_timing(originals)
        )
        second = None
        if second_paths:
            print(f"second set: {len(second_paths)} photos...", file=sys.stderr, flush=True)
            second = (
                collect_originals(second_paths, enroll, args.jobs),
                *collect_edits(second_paths, query, args.jobs, args.seed + 1),
            )
        if args.hashes:
            with args.hashes.open("wb") as f:
                pickle.dump((bank, queries, origin, edit_index, dis, timing, second), f)

    results = [evaluate(BASELINE, bank, queries, origin, dis, timing["plain"], timing["plain"])]
    if not args.baseline_only:
        results.append(
            evaluate(SHIPPED, bank, queries, origin, dis, timing["enroll"], timing["query"])
        )
    ablations = [] if args.baseline_only else _ablations(bank, queries, origin)
    meta = {
        "command": "`make bench-quality` (`python -m bench.quality -j 2`)"
        + (f" with `--originals {args.originals}`" if args.originals else "")
        + (f" `--distractors {args.distractors}`" if args.distractors else ""),
        "originals": f"{len(originals)} (`photos/bsds500`), {len(EDITS)} edits each, seed "
        f"{args.seed}: {len(origin):,} edited queries",
        "distractors": f"{len(distractors):,} (`photos/clothing`), each against every original",
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, shared with other "
        "jobs (times are indicative; ratios hold better)",
        "run time": f"{time.time() - started:.0f} s"
        + (" (matching and report only: hashes loaded with --hashes)" if loaded else ""),
    }
    extra: list[str] = []
    if not args.baseline_only:
        print("frontier...", file=sys.stderr, flush=True)
        rows = evaluate_frontier(bank, queries, origin, dis)
        extra += [
            "## Frontier: recall per tier against stored hashes per image (issue 14)",
            "",
            "Each profile is a subset of the collected views (by name), on the same queries; "
            "false matches are the distractors against the bank under that profile.",
            "",
            *frontier_rows(rows, edit_index),
            "",
        ]
    if second is not None and not args.baseline_only:
        print("second photo set...", file=sys.stderr, flush=True)
        bank2, queries2, origin2, edit_index2 = second
        # A photo whose every view is below the PDQ floor (too flat) enrolls no PDQ view: it is
        # enrolled by pHash and digests, so its queries say nothing about the views.
        flat2 = sorted(set(range(bank2.pictures)) - set(np.unique(bank2.owner).tolist()))
        queries2, origin2, edit_index2 = _drop_originals(queries2, origin2, edit_index2, flat2)
        results2 = [
            evaluate(BASELINE, bank2, queries2, origin2, dis, timing["plain"], timing["plain"]),
            evaluate(SHIPPED, bank2, queries2, origin2, dis, timing["enroll"], timing["query"]),
        ]
        rows2 = evaluate_frontier(bank2, queries2, origin2, None)
        extra += [
            "## Second photo set: photos not used to design the profiles (issue 14)",
            "",
            f"{bank2.pictures} photos (`python -m bench.quality.second_set`: the photographs "
            "among the wallpapers of Debian's `mate-backgrounds` (GPL-2+) and "
            "`plasma-workspace-wallpapers` (LGPL-3, one CC-BY-SA-4.0), and scikit-image's "
            "astronaut, chelsea, coffee and rocket (public domain / CC0)), scaled to fit "
            f"640x640; every edit of each, seed {args.seed + 1}: {len(origin2):,} queries. "
            "Too flat for PDQ (no view at or above the quality floor), so enrolled by pHash and "
            "digests and left out here: "
            + (", ".join(f"`{second_names[i]}`" for i in flat2) or "none")
            + ". "
            "False matches: the same distractors against this bank.",
            "",
            *tier_rows(results2, edit_index2),
            "",
            *false_rows(results2),
            "",
            "Frontier on the second set (recall only):",
            "",
            *frontier_rows(rows2, edit_index2, false_matches=False),
            "",
            "Recall per edit on the second set:",
            "",
            *edit_rows(results2, edit_index2),
            "",
        ]
    for k, note in enumerate(args.note):
        meta[f"note {k + 1}"] = note
    if args.browser_enroll and not args.baseline_only:
        _browser_report(originals, bank, queries, origin, edit_index, dis, timing, meta, argv)
    write_report(results, edit_index, args.out, meta, ablations, extra)
    print(f"wrote {args.out / 'quality.md'}", file=sys.stderr)
    print((args.out / "quality.md").read_text())
    return 0


def _browser_report(
    originals: list[Path],
    bank: HashSet,
    queries: HashSet,
    origin: np.ndarray,
    edit_index: np.ndarray,
    dis: HashSet,
    timing: dict[str, float],
    meta: dict[str, str],
    argv: list[str] | None,
) -> None:
    """Recall per tier with the originals enrolled by the browser's worker (issue 13), against
    the Python-made enrollment, on the same queries and distractors."""
    from bench.browser_drift import browser_enroll

    print(f"enrolling {len(originals)} originals in Chromium...", file=sys.stderr, flush=True)
    browser_bank = browser_enroll(originals)
    python = evaluate(
        dataclasses.replace(SHIPPED, name="Python-made enrollment"),
        bank,
        queries,
        origin,
        dis,
        timing["enroll"],
        timing["query"],
    )
    made = evaluate(
        dataclasses.replace(SHIPPED, name="browser-made enrollment"),
        browser_bank,
        queries,
        origin,
        dis,
        timing["enroll"],
        timing["query"],
    )
    same = sum(
        bool(np.array_equal(a, b))
        for a, b in zip(
            np.split(bank.hashes, np.cumsum(np.bincount(bank.owner, minlength=bank.pictures))[:-1]),
            np.split(
                browser_bank.hashes,
                np.cumsum(np.bincount(browser_bank.owner, minlength=bank.pictures))[:-1],
            ),
            strict=False,
        )
    )
    command = " ".join(["python -m bench.quality", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Recall with browser-made enrollment hashes",
        "",
        f"`{command}`. The originals enrolled twice with the shipped `enroll` profile: by the",
        "Python library (PIL's decoder, `matcher enroll`) and by the web app's hashing worker in",
        "headless Chromium (its own decoder); every edited query and distractor hashed by Python",
        "(`query` profile), the same for both. Per tier, the share of edited queries that find",
        f"their original. Originals whose enrolled views came out identical: {same} of "
        f"{bank.pictures}.",
        "",
        *(f"- {k}: {v}" for k, v in meta.items() if k != "command"),
        "",
        *tier_rows([python, made], edit_index),
        "",
        *false_rows([python, made]),
        "",
    ]
    out = ROOT / "bench" / "results" / "browser-quality.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
