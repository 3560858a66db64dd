"""Hashing in a real headless Chromium, with the browser's own image decoder.

The worker hashes the PDQ conformance images as files (no help from Python) and must land
within each row's tolerance of the reference hash; a phone photo gets its enroll views with
progress per view; a video gets its streamed digests; files the browser cannot read give the
plain-language errors of the worker's interface (an iPhone HEIC says what to do).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from matcher.hashing import hash_file, pdq
from matcher.hashing.views import ENROLL, view_names
from matcher.signals import PDQ, Hash
from tests.conftest import shared_path
from tests.web.browser import StaticSite
from tests.web.hashing_page import hash_in_browser

HEIC_HEADER = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"  # what an iPhone photo starts with


def _distance(a: str, b: str) -> int:
    return Hash.from_hex(PDQ, a) - Hash.from_hex(PDQ, b)


def test_pdq_conformance_with_the_browser_decoder(page: Any, static_site: StaticSite) -> None:
    root = shared_path("pdq")
    with (root / "expected.csv").open() as f:
        rows = list(csv.DictReader(f))
    urls = [static_site.share(f"pdq/{r['path']}", root / r["path"]) for r in rows]
    results = hash_in_browser(page, static_site.url, urls, profile="plain", views=True)
    failures = []
    for row, result in zip(rows, results, strict=True):
        assert result["type"] == "result", (row["path"], result)
        (view,) = result["views"]
        if row["path"].endswith("I16.png"):
            # PIL turns 16-bit grey into 8 bits by clipping at 255 (this picture turns mostly
            # white: quality 36); a browser scales the values down, as every viewer shows them.
            # The browser hashes the picture a person sees: checked against that instead.
            with Image.open(root / row["path"]) as im:
                grey = np.asarray(im, dtype=np.float64) / 257
            seen = Image.fromarray(np.round(grey).astype(np.uint8)).convert("RGB")
            assert _distance(view["hex"], pdq(seen).hex) <= 8
            continue
        d = _distance(view["hex"], row["pdq_hex"])
        if d > int(row["max_distance"]):
            failures.append(f"{row['path']}: {d} bits (allowed {row['max_distance']})")
        if row["quality"] and abs(view["quality"] - int(row["quality"])) > 2:
            failures.append(f"{row['path']}: quality {view['quality']}, expected {row['quality']}")
    assert not failures, failures


def test_a_photo_gets_its_enroll_views_with_progress(page: Any, static_site: StaticSite) -> None:
    path = shared_path("pdq", "pdqhash-python", "image3.jpg")
    url = static_site.share("photo.jpg", path)
    (result,) = hash_in_browser(page, static_site.url, [url], profile="enroll")
    assert result["type"] == "result" and result["thumbnailless"] is True
    item = result["item"]
    assert item["kind"] == "image"
    pdqs = [h for h in item["hashes"] if h["signal"] == "pdq"]
    python = hash_file(path, profile="enroll")
    assert python.views is not None
    assert len(pdqs) == len({h.hex for _, h in python.views})  # each value once
    assert all(h["quality"] >= 50 for h in pdqs) and pdqs[0]["view"] == "full"
    data = path.read_bytes()
    others = {h["signal"]: h["hex"] for h in item["hashes"] if h["signal"] != "pdq"}
    assert Hash.from_hex("phash", others.pop("phash")) - python.hashes["phash"] <= 4
    assert others == {
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    done = [d for d, _ in result["progress"]]
    assert done == sorted(done) and done[-1] == result["progress"][-1][1] == len(view_names(ENROLL))
    assert len(done) >= 90  # told per view, not once at the end


def test_exif_orientation_is_applied_as_python_applies_it(
    page: Any, static_site: StaticSite, tmp_path: Path
) -> None:
    # A phone stores the sensor's pixels and a tag saying how to turn them: both sides must
    # hash the picture as it is shown.
    with Image.open(shared_path("pdq", "pdqhash-python", "image4.jpg")) as im:
        upright = im.convert("RGB")
    urls = []
    turned = ((6, upright.transpose(Image.Transpose.ROTATE_90)), (3, upright.rotate(180)))
    for tag, stored in turned:
        exif = Image.Exif()
        exif[0x0112] = tag
        stored.save(tmp_path / f"o{tag}.jpg", quality=95, exif=exif)
        urls.append(static_site.share(f"o{tag}.jpg", tmp_path / f"o{tag}.jpg"))
    results = hash_in_browser(page, static_site.url, urls, profile="plain", views=True)
    want = pdq(upright).hex
    for tag, result in zip((6, 3), results, strict=True):
        python = hash_file(tmp_path / f"o{tag}.jpg").hashes["pdq"].hex
        got = result["views"][0]["hex"]
        assert _distance(got, python) <= 8 and _distance(got, want) <= 16, tag


@pytest.mark.parametrize(
    ("name", "content", "kind", "words"),
    [
        ("IMG_0001.HEIC", HEIC_HEADER + bytes(200), "heic", "Most Compatible"),
        ("notes.txt", b"just some text, not a picture\n" * 10, "unsupported", "photo"),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "corrupt", "damaged"),
    ],
)
def test_files_the_browser_cannot_read_give_plain_errors(
    page: Any,
    static_site: StaticSite,
    tmp_path: Path,
    name: str,
    content: bytes,
    kind: str,
    words: str,
) -> None:
    (tmp_path / name).write_bytes(content)
    url = static_site.share(f"bad/{name}", tmp_path / name)
    (result,) = hash_in_browser(page, static_site.url, [url])
    assert result["type"] == "error" and result["kind"] == kind, result
    assert words in result["message"]
    assert "Error" not in result["message"] and "exception" not in result["message"].lower()


def test_every_awkward_file_gives_what_python_gives(page: Any, static_site: StaticSite) -> None:
    # BMP, PNG, WebP, JPEG, PBM/PGM/PPM, TIFF, GIF, alpha, a damaged file: a browser reads
    # fewer formats than PIL, so a file Python hashes may be "unsupported" here, but never a
    # crash, and every picture both read hashes alike.
    folder = shared_path("formats")
    files = sorted(folder.iterdir())
    urls = [static_site.share(f"formats/{f.name}", f) for f in files]
    results = hash_in_browser(page, static_site.url, urls, profile="plain", views=True)
    read = 0
    for file, result in zip(files, results, strict=True):
        python = hash_file(file)
        if result["type"] == "error":
            assert result["kind"] in ("unsupported", "corrupt"), (file.name, result)
            assert "corrupt" in file.name or file.suffix in (".pbm", ".pgm", ".ppm", ".tiff")
            continue
        assert python.ok, file.name
        (view,) = result["views"]
        assert _distance(view["hex"], python.hashes["pdq"].hex) <= 16, file.name
        read += 1
    assert read >= 7


def test_a_truncated_jpeg_is_refused_as_python_refuses_it(
    page: Any, static_site: StaticSite, tmp_path: Path
) -> None:
    # A browser shows the missing part grey; PIL refuses the file, and so does the worker.
    whole = shared_path("pdq", "pdqhash-python", "image1.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    assert not hash_file(tmp_path / "cut.jpg").ok
    url = static_site.share("cut.jpg", tmp_path / "cut.jpg")
    (result,) = hash_in_browser(page, static_site.url, [url])
    assert result["type"] == "error" and result["kind"] == "corrupt", result
    assert "damaged" in result["message"]


def test_a_video_gets_its_streamed_digests(
    page: Any, static_site: StaticSite, tmp_path: Path
) -> None:
    # An MP4 header and 9 MB of bytes: more than two of the worker's 4 MiB chunks.
    data = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41" + bytes(range(256)) * 36_000
    (tmp_path / "clip.mp4").write_bytes(data)
    url = static_site.share("clip.mp4", tmp_path / "clip.mp4")
    (result,) = hash_in_browser(page, static_site.url, [url])
    assert result["type"] == "result", result
    assert result["item"] == {
        "kind": "video",
        "hashes": [
            {"signal": "md5", "hex": hashlib.md5(data, usedforsecurity=False).hexdigest()},
            {"signal": "sha256", "hex": hashlib.sha256(data).hexdigest()},
        ],
    }
    assert len(result["progress"]) == 3 and result["progress"][-1] == [len(data), len(data)]
