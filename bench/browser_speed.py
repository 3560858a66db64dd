"""Time to hash a 12 MP phone photo with the enroll profile in headless Chromium:
``python -m bench.browser_speed``.

The web app's worker (``matcher/web/static/hashing/worker.js``) is handed the photo as a File and
timed from the post to its result: decoding (the browser's), the box reduce to PIL's draft size,
all 223 enroll views, MD5 and SHA-256 of the file. The same photo through the Python library
(``hash_file(..., profile="enroll")``, one process) is timed in the same run as the baseline.
Target: under 5 s a photo. Writes ``bench/results/browser-speed.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from matcher.hashing import hash_file

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
PHOTO = DATA / "pdq" / "threatexchange-pdq" / "reg-test-input" / "exif-rotn" / "exif-rotn-1.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser_speed", description=__doc__)
    parser.add_argument("--photo", type=Path, default=PHOTO, help="a 12 MP JPEG (exif-rotn-1)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (5)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "browser-speed.md")
    args = parser.parse_args(argv)
    if not args.photo.exists():
        raise SystemExit(f"{args.photo} not found (set MATCHER_TEST_DATA)")
    from playwright.sync_api import sync_playwright

    from tests.web.browser import StaticSite, launch_chromium
    from tests.web.hashing_page import hash_in_browser

    site = StaticSite()
    url = site.share(args.photo.name, args.photo)
    browser_ms: list[float] = []
    steps: list[dict[str, float]] = []
    python_ms: list[float] = []
    views = 0
    cores = 1
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_context().new_page()
            for run in range(args.runs + 1):
                (result,) = hash_in_browser(page, site.url, [url])
                assert result["type"] == "result", result
                views = sum(h["signal"] == "pdq" for h in result["item"]["hashes"])
                start = time.perf_counter()
                hash_file(args.photo, profile="enroll")
                python = 1000 * (time.perf_counter() - start)
                if run:  # the first run warms the page, the JIT and the file cache
                    browser_ms.append(float(result["ms"]))
                    steps.append(result["timings"])
                    python_ms.append(python)
            cores = int(page.evaluate("navigator.hardwareConcurrency"))
            browser.close()
    finally:
        site.close()
    b, py = statistics.median(browser_ms), statistics.median(python_ms)
    from PIL import Image

    with Image.open(args.photo) as im:
        size = f"{im.width}x{im.height}"
    lines = [
        "# Hashing a 12 MP photo in headless Chromium (enroll profile)",
        "",
        f"`python -m bench.browser_speed --runs {args.runs}` on {platform.node() or 'this machine'}"
        f" ({os.cpu_count()} cores, shared), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Photo: `{args.photo.name}` ({size}, {args.photo.stat().st_size / 1e6:.1f} MB), "
        f"{views} distinct PDQ hashes kept, plus MD5 and SHA-256.",
        "",
        "| hasher | median | min | max |",
        "| --- | ---: | ---: | ---: |",
        f"| browser worker (Chromium, {min(4, cores)} helper workers) | {b / 1000:.2f} s | "
        f"{min(browser_ms) / 1000:.2f} s | {max(browser_ms) / 1000:.2f} s |",
        f"| Python library (PIL + pdqhash C++, one process) | {py / 1000:.2f} s | "
        f"{min(python_ms) / 1000:.2f} s | {max(python_ms) / 1000:.2f} s |",
        "",
        "Browser steps (median): "
        + ", ".join(
            f"{k} {statistics.median(t[k] for t in steps) / 1000:.2f} s"
            for k in ("decode", "views", "digests")
        )
        + " (decode: the browser's JPEG decoder, the canvas read-back and the box reduce to "
        "PIL's draft size; views: PDQ of the 223 views and pHash).",
        "",
        f"Browser / Python: {b / py:.1f}x. Target for the browser: under 5 s "
        f"({'met' if b < 5000 else 'NOT met'}).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
