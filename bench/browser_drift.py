"""Drift between browser-made and Python-made enroll views: ``python -m bench.browser_drift``.

The web app hashes photos in the browser (``matcher/web/static/hashing``), with the browser's
own decoder; ``matcher enroll`` hashes them with PIL. On the same pixels the two make the same
bits (``tests/web/test_hashing_node.py``), so what is left is the decoders: this measures it on
the quality benchmark's photos (BSDS500, as ``bench.quality`` enrolls them) and on 12 MP phone
photos (where PIL decodes a JPEG at 1/4 scale in the DCT domain and the browser decodes it in
full, then box-reduces it to the same size), view by view, per family of views: mean and max
Hamming distance, and the views kept (quality >= 50) on one side only. Writes
``bench/results/browser-drift.md``. Needs chromium and playwright, like the browser tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matcher.hashing import decode_image, phash
from matcher.hashing.views import enroll_views
from matcher.signals import PDQ, PHASH, Hash

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
FAMILIES = (
    "full",
    "centred crops",
    "off-centre crops",
    "50% crops",
    "rotations",
    "quarter turns and flips",
    "rotations with corners",
    "pHash (64 bits)",
)


def family(name: str) -> str:
    """The family of an enroll view's name (``crop0.9@0.5,0.5``, ``rot+1.5``, ``dih/rot90``...)."""
    if name == "full":
        return "full"
    if name == "phash":
        return "pHash (64 bits)"
    if name.startswith("crop"):
        scale, at = name[4:].split("@")
        if float(scale) == 0.5:
            return "50% crops"
        return "centred crops" if at == "0.5,0.5" else "off-centre crops"
    if name.startswith("rotfill"):
        return "rotations with corners"
    if name.startswith("rot"):
        return "rotations"
    return "quarter turns and flips"


def python_views(path: Path) -> dict[str, Hash]:
    """The enroll views as ``matcher enroll`` makes them, and the pHash as ``"phash"``."""
    image = decode_image(path.read_bytes())
    return {**dict(enroll_views(image)), "phash": phash(image)}


def browser_views(
    page: Any, site: Any, paths: list[Path], batch: int = 10
) -> list[tuple[dict[str, Hash], float]]:
    """Each photo's enroll views as the worker makes them, and the worker's time (ms)."""
    from tests.web.hashing_page import hash_in_browser

    out: list[tuple[dict[str, Hash], float]] = []
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        urls = [site.share(f"drift/{start + i}/{p.name}", p) for i, p in enumerate(chunk)]
        for path, result in zip(
            chunk, hash_in_browser(page, site.url, urls, views=True), strict=True
        ):
            if result["type"] != "result":
                raise SystemExit(f"{path}: the browser could not hash it: {result}")
            views = {
                v["name"]: Hash.from_hex(PDQ, v["hex"], quality=v["quality"])
                for v in result["views"]
            }
            for h in result["item"]["hashes"]:
                if h["signal"] == "phash":
                    views["phash"] = Hash.from_hex(PHASH, h["hex"])
            out.append((views, float(result["ms"])))
    return out


def browser_enroll(paths: list[Path]) -> Any:
    """The enroll views of ``paths`` made in Chromium, as ``bench.quality``'s ``HashSet``."""
    from playwright.sync_api import sync_playwright

    from bench.quality.collect import _build
    from tests.web.browser import StaticSite, launch_chromium

    site = StaticSite()
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_context().new_page()
            made = browser_views(page, site, paths)
            browser.close()
    finally:
        site.close()
    return _build(
        [
            ([(n, h.value) for n, h in views.items() if n != "phash"], ms / 1000)
            for views, ms in made
        ]
    )


def compare(
    pairs: Iterable[tuple[dict[str, Hash], dict[str, Hash]]],
) -> dict[str, dict[str, float]]:
    """Per family: views compared, mean and max bits, and views kept on one side only."""
    bits: dict[str, list[int]] = defaultdict(list)
    lone: dict[str, int] = defaultdict(int)
    for browser, python in pairs:
        for name in browser.keys() | python.keys():
            f = family(name)
            if name in browser and name in python:
                bits[f].append(browser[name] - python[name])
            else:
                lone[f] += 1
    table: dict[str, dict[str, float]] = {}
    every = [b for f in FAMILIES if f != "pHash (64 bits)" for b in bits[f]]
    for f in (*FAMILIES[:-1], "all PDQ views", FAMILIES[-1]):
        values = every if f == "all PDQ views" else bits[f]
        table[f] = {
            "views": len(values),
            "mean": statistics.fmean(values) if values else 0.0,
            "max": max(values) if values else 0,
            "exact": sum(v == 0 for v in values) / len(values) if values else 0.0,
            "lone": sum(lone.values()) if f == "all PDQ views" else lone[f],
        }
    return table


def _table(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| views | compared | mean bits | max bits | identical | kept on one side only |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f, r in rows.items():
        lines.append(
            f"| {f} | {int(r['views'])} | {r['mean']:.2f} | {int(r['max'])} "
            f"| {100 * r['exact']:.1f}% | {int(r['lone'])} |"
        )
    return [*lines, ""]


def photo_sets(every: int, phones: bool) -> dict[str, list[Path]]:
    bsds = sorted((DATA / "photos" / "bsds500").glob("*/*.jpg"))
    sets = {f"BSDS500 photos (481x321 JPEG), every {every}th": bsds[::every]}
    if every == 1:
        sets = {"BSDS500 photos (481x321 JPEG), all": bsds}
    if phones:
        rotn = DATA / "pdq" / "threatexchange-pdq" / "reg-test-input" / "exif-rotn"
        sets["12 MP phone photos (4032x3024 JPEG, EXIF orientation 1, 3, 6, 8)"] = sorted(
            rotn.glob("*.jpg")
        )
    return {k: v for k, v in sets.items() if v}


def measure(every: int = 1, phones: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    from playwright.sync_api import sync_playwright

    from tests.web.browser import StaticSite, launch_chromium

    sets = photo_sets(every, phones)
    if not sets:
        raise SystemExit(f"no photos under {DATA} (set MATCHER_TEST_DATA)")
    site = StaticSite()
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_context().new_page()
            for title, paths in sets.items():
                made = browser_views(page, site, paths)
                results[title] = compare(
                    (views, python_views(path))
                    for (views, _), path in zip(made, paths, strict=True)
                )
            browser.close()
    finally:
        site.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser_drift", description=__doc__)
    parser.add_argument("--every", type=int, default=1, help="every Nth BSDS500 photo (1: all)")
    parser.add_argument("--no-phones", action="store_true", help="leave out the 12 MP photos")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "browser-drift.md")
    args = parser.parse_args(argv)
    start = time.monotonic()
    results = measure(args.every, not args.no_phones)
    command = " ".join(["python -m bench.browser_drift", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Browser-made vs Python-made enroll views",
        "",
        f"`{command}` on {platform.node() or 'this machine'} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - start:.0f} s.",
        "",
        "Hamming distance (of 256 bits; pHash: of 64) between the hash the browser's worker",
        "makes of each view and the one `matcher enroll --profile enroll` makes, for the views",
        "both keep. On the",
        "same pixels they are identical (tests/web/test_hashing_node.py): every bit here comes",
        "from the decoders (Chromium's and PIL's), and for the phone photos from PIL's DCT-domain",
        "1/4 decode against the browser's full decode and box reduce. Matching allows 31 bits.",
        "",
    ]
    for title, rows in results.items():
        lines += _table(title, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
