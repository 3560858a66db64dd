"""The browser's hashing modules (``matcher/web/static/hashing``) in Node, against Python.

Python decodes the pictures (PIL, as ``matcher hash`` does) and writes their raw RGB pixels with
what the Python library makes of them; ``node --test matcher/web/tests`` then hashes the same
pixels in JavaScript: PDQ must be bit-identical to the Python library and within each row's
tolerance of the reference hashes (``pdq/expected.csv``), the enroll views identical view by
view, and the streamed MD5 and SHA-256 equal to hashlib's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from matcher.hashing.compute import pdq, phash
from matcher.hashing.decode import decode_image
from matcher.hashing.views import PROFILES
from tests.conftest import DATA, ROOT

NODE_TESTS = ROOT / "matcher" / "web" / "tests"


def _write(folder: Path, name: str, image: Image.Image) -> dict[str, object]:
    (folder / f"{name}.rgb").write_bytes(image.convert("RGB").tobytes())
    return {"file": f"{name}.rgb", "width": image.width, "height": image.height}


def _fixtures(folder: Path, astronaut: Image.Image, coffee: Image.Image) -> None:
    manifest: dict[str, object] = {"pdq": [], "views": [], "digests": []}
    expected = DATA / "pdq" / "expected.csv"
    if expected.exists():
        with expected.open() as f:
            for i, row in enumerate(csv.DictReader(f)):
                image = decode_image((DATA / "pdq" / row["path"]).read_bytes())
                h = pdq(image)
                manifest["pdq"].append(  # type: ignore[attr-defined]
                    {
                        **_write(folder, f"pdq{i}", image),
                        "path": row["path"],
                        "expected": row["pdq_hex"],
                        "max_distance": int(row["max_distance"]),
                        "quality": int(row["quality"]) if row["quality"] else None,
                        "python": h.hex,
                        "python_quality": h.quality,
                        "phash": phash(image).hex,
                    }
                )
    else:
        manifest["pdq_skipped"] = f"no test data at {DATA}"
    # Views: two bundled photos (always there), one of them odd-sized so that every rounding
    # of the crop boxes and the rotation's inner rectangle is exercised, and a flat picture
    # (its turns, flips and black-cornered rotations are left out).
    odd = astronaut.crop((3, 0, 3 + 451, 301))
    yy, xx = np.mgrid[0:120, 0:160]
    flat = np.dstack([90 + 0 * xx + yy // 12, 140 + 0 * yy, 200 + xx // 16]).astype(np.uint8)
    for name, image, profile in (
        ("odd", odd, "enroll"),
        ("odd-wide", odd, "enroll-wide"),
        ("coffee", coffee.reduce(2), "enroll-light"),
        ("flat", Image.fromarray(flat), "enroll"),
    ):
        views = PROFILES[profile](image)  # type: ignore[misc]
        manifest["views"].append(  # type: ignore[attr-defined]
            {
                **_write(folder, f"view-{name}", image),
                "name": name,
                "profile": profile,
                "phash": phash(image).hex,
                "views": {n: [h.hex, h.quality] for n, h in views},
            }
        )
    rng = np.random.default_rng(7)
    for n in (0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000, 70_001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        (folder / f"bytes{n}").write_bytes(data)
        manifest["digests"].append(  # type: ignore[attr-defined]
            {
                "file": f"bytes{n}",
                "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_browser_hashing_modules_in_node_agree_with_python(
    node: str, tmp_path: Path, astronaut: Image.Image, coffee: Image.Image
) -> None:
    _fixtures(tmp_path, astronaut, coffee)
    env = {**os.environ, "HASHJS_FIXTURES": str(tmp_path)}
    run = subprocess.run(
        [node, "--test", *sorted(str(p) for p in NODE_TESTS.glob("*.test.mjs"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "# fail 0" in run.stdout and "# skipped 0" in run.stdout, run.stdout[-3000:]
