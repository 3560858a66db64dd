"""Real enroll- and query-profile views of the shared photos, hashed once and cached on disk.

Hashing every shared photo with the ``enroll`` profile (about 223 PDQ hashes each) takes
CPU-hours on two cores, so the benchmarks never do it inline: this module hashes the photos in
worker processes and appends each photo's views to a cache folder as it goes, so an interrupted
run resumes where it stopped and a benchmark can use however many photos are done so far.

- cache folder: ``MATCHER_BENCH_CACHE`` (default ``../tmp/matcher-bench`` beside the project,
  never inside the repository: the views are hashes of the shared photos);
- ``enroll/<photo index>.npy``: the photo's ``enroll_views`` PDQ codes, ``uint8 (n, 32)``;
- ``query/<photo index>.npz``: for an edited copy of the photo (cropped a few percent, maybe
  mirrored, shrunk, re-encoded), its ``query_views`` PDQ codes and its pHash: one upload.

Generate (resumable; ``-j`` worker processes, ``--limit`` photos)::

    .venv/bin/python -m bench.views_cache -j 2 --limit 1500

``bank(n)`` then gives ``n`` PDQ codes: every cached enroll view (item = photo), padded with
random codes in items of 200; ``uploads()`` the cached query uploads.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("MATCHER_BENCH_CACHE", ROOT.parent / "tmp" / "matcher-bench"))


def photos() -> list[Path]:
    """The shared photos in a fixed order: BSDS500 first (varied scenes), then clothing."""
    root = DATA / "photos"
    return sorted(root.glob("bsds500/*/*.jpg")) + sorted(root.glob("clothing/*.jpg"))


def _edit(image, seed: int):  # type: ignore[no-untyped-def]
    """A re-upload: cropped by a few percent, maybe mirrored, shrunk, re-encoded as JPEG."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    w, h = image.size
    cut = rng.uniform(0.02, 0.08)
    out = image.crop((int(w * cut), 0, w, int(h * (1 - cut / 2))))
    if seed % 2:
        out = ImageOps.mirror(out)
    out = out.resize((max(1, out.width * 4 // 5), max(1, out.height * 4 // 5)))
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=int(rng.integers(60, 90)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _codes(hashes: list) -> np.ndarray:  # type: ignore[type-arg]
    if not hashes:
        return np.empty((0, 32), dtype=np.uint8)
    return np.frombuffer(b"".join(h.value for h in hashes), np.uint8).reshape(-1, 32)


def _hash_one(k: int) -> int:
    from PIL import Image

    from matcher.hashing import enroll_views, phash, query_views

    path = photos()[k]
    with Image.open(path) as im:
        image = im.convert("RGB")
    enroll_file = CACHE / "enroll" / f"{k}.npy"
    if not enroll_file.exists():
        codes = _codes([h for _, h in enroll_views(image)])
        np.save(enroll_file.with_suffix(".tmp.npy"), codes)
        os.replace(enroll_file.with_suffix(".tmp.npy"), enroll_file)
    query_file = CACHE / "query" / f"{k}.npz"
    if not query_file.exists():
        edited = _edit(image, k)
        codes = _codes([h for _, h in query_views(edited)])
        tmp = query_file.with_suffix(".tmp.npz")
        np.savez(tmp, pdq=codes, phash=np.frombuffer(phash(edited).value, np.uint8))
        os.replace(tmp, query_file)
    return k


def generate(limit: int, jobs: int) -> None:
    """Hash the first ``limit`` photos not yet cached, ``jobs`` processes at a time."""
    (CACHE / "enroll").mkdir(parents=True, exist_ok=True)
    (CACHE / "query").mkdir(parents=True, exist_ok=True)
    todo = [
        k
        for k in range(min(limit, len(photos())))
        if not (CACHE / "enroll" / f"{k}.npy").exists()
        or not (CACHE / "query" / f"{k}.npz").exists()
    ]
    with ProcessPoolExecutor(jobs) as pool:
        for done, _ in enumerate(pool.map(_hash_one, todo, chunksize=1), 1):
            if done % 25 == 0:
                print(f"{done}/{len(todo)} photos hashed", file=sys.stderr, flush=True)


def cached() -> list[int]:
    """Photo numbers whose enroll views and query upload are both cached."""
    if not (CACHE / "enroll").is_dir():
        return []
    done = {int(p.name.split(".")[0]) for p in (CACHE / "enroll").glob("*.npy")}
    done = {k for k in done if (CACHE / "query" / f"{k}.npz").exists()}
    return sorted(done)


def enrolled(photo_numbers: list[int]) -> list[np.ndarray]:
    """The cached enroll-profile PDQ codes of each photo (one array per photo = one item)."""
    return [np.load(CACHE / "enroll" / f"{k}.npy") for k in photo_numbers]


def uploads(photo_numbers: list[int]) -> list[tuple[np.ndarray, bytes]]:
    """The cached query uploads: (query-profile PDQ codes, pHash bytes) per edited photo."""
    out = []
    for k in photo_numbers:
        with np.load(CACHE / "query" / f"{k}.npz") as f:
            out.append((f["pdq"], f["phash"].tobytes()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--limit", type=int, default=10**9, help="hash at most this many photos")
    args = parser.parse_args()
    generate(args.limit, args.jobs)
    print(f"{len(cached())} photos cached in {CACHE}", file=sys.stderr)


if __name__ == "__main__":
    main()
