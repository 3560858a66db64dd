"""Images per second for `matcher hash` against PIL full decode + pdqhash, in the same run.

Sets: the natural photos of ../shared/data/photos (small, 0.08-0.15 MP), Meta's 12 MP phone
photos (exif-rotn) and the 1.6 MP photos of bridge-mods. Each is hashed by
- the baseline: ``PIL.Image.open`` + ``convert('RGB')`` + ``pdqhash.compute`` on the full image;
- ``matcher hash`` as the command runs it (all four signals: PDQ, pHash, MD5, SHA-256), and with
  PDQ alone, in one process and in two (``-j 2``); the baseline gets two processes too.
The drift table compares our PDQ to the full decode's on every photo of 1 MP or more.

Run: ``make bench`` (or ``MATCHER_BENCH_PHOTOS=500 make bench`` for a quicker sample).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from PIL import Image

from bench.conftest import data_path, median_seconds, report
from matcher.hashing import hash_bytes, hash_file, hash_files, ordered_map

HEADER = (
    "| set | images | method | jobs | images/s | x baseline (same jobs) |\n"
    "|---|---:|---|---:|---:|---:|"
)
_rates: dict[tuple[str, int], float] = {}


def _baseline(path: Path) -> bytes:
    with Image.open(path) as image:
        bits, _ = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(bits.astype(np.uint8)).tobytes()


def _photos() -> list[Path]:
    files = sorted(data_path("photos").rglob("*.jpg"))
    limit = int(os.environ.get("MATCHER_BENCH_PHOTOS", "0"))
    if limit and limit < len(files):
        files = sorted(random.Random(0).sample(files, limit))
    return files


def _phone() -> list[Path]:
    return sorted(
        data_path("pdq", "threatexchange-pdq", "reg-test-input", "exif-rotn").glob("*.jpg")
    )


def _bridge() -> list[Path]:
    folder = data_path("pdq", "threatexchange-pdq", "bridge-mods")
    return [p for p in sorted(folder.glob("*.jpg")) if Image.open(p).size[0] >= 1000]


# The large-photo sets are small (4 and 8 files), so each is hashed 8 and 4 times over: starting
# the process pool of -j 2 would otherwise weigh more than the hashing.
SETS = {
    "photos": _photos,
    "phone-12MP": lambda: _phone() * 8,
    "bridge-1.6MP": lambda: _bridge() * 4,
}
METHODS = {
    "baseline (PIL + pdqhash)": None,
    "matcher hash (pdq,phash,md5,sha256)": ("pdq", "phash", "md5", "sha256"),
    "matcher hash --signals pdq": ("pdq",),
}


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dataset", list(SETS))
def test_hash_speed(benchmark, dataset: str, method: str, jobs: int) -> None:
    files = SETS[dataset]()
    signals = METHODS[method]
    if signals is None:
        run = lambda: list(ordered_map(_baseline, files, jobs=jobs))  # noqa: E731
    else:
        run = lambda: [r for r in hash_files(files, signals=signals, jobs=jobs) if r.ok]  # noqa: E731
    rounds = max(2, min(10, 400 // len(files)))
    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1 if len(files) < 50 else 0)
    assert len(out) == len(files)
    rate = len(files) / median_seconds(benchmark)
    if signals is None:
        _rates[(dataset, jobs)] = rate
    base = _rates.get((dataset, jobs))
    ratio = f"{rate / base:.1f}x" if base and signals is not None else "1.0x"
    report(
        "hash_speed",
        HEADER,
        f"| {dataset} | {len(files)} | {method} | {jobs} | {rate:,.1f} | {ratio} |",
    )


def _full_decode(path: Path) -> tuple[np.ndarray, int]:
    from PIL import ImageOps

    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
        bits, quality = pdqhash.compute(np.asarray(upright))
    return np.packbits(bits.astype(np.uint8)), int(quality)


def test_draft_drift() -> None:
    """PDQ distance between our reduced decode and the full decode, on photos of 1 MP or more."""
    files = _phone() + _bridge()
    files += [
        p
        for p in sorted(data_path("pdq", "threatexchange-pdq", "reg-test-input", "dih").glob("*"))
        if Image.open(p).size[0] * Image.open(p).size[1] >= 1_000_000
    ]
    drift = []
    for path in files:
        full, quality = _full_decode(path)
        ours = hash_file(path, signals=["pdq"]).hashes["pdq"]
        assert quality >= 80
        drift.append(int(np.unpackbits(full ^ np.frombuffer(ours.value, np.uint8)).sum()))
    report(
        "hash_drift",
        "| photos (>= 1 MP, quality >= 80) | mean drift (bits) | max drift (bits) |\n"
        "|---:|---:|---:|",
        f"| {len(files)} | {np.mean(drift):.2f} | {max(drift)} |",
    )
    assert max(drift) <= 10 and np.mean(drift) <= 4


def test_hash_bytes_is_pure() -> None:
    """Sanity: the benchmarked path and the library agree."""
    path = _phone()[0]
    assert (
        hash_bytes(path.read_bytes(), signals=["pdq"])[0]["pdq"]
        == hash_file(path, signals=["pdq"]).hashes["pdq"]
    )
