"""Client-side hashing: conformance with Meta's reference hashes, decoding, and speed shortcuts."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image

from matcher.errors import CorruptImage, ImageTooLarge, UnsupportedImage
from matcher.hashing import (
    DIHEDRAL_NAMES,
    decode_image,
    hash_bytes,
    hash_file,
    iter_files,
    pdq,
    pdq_dihedral,
    phash,
)
from matcher.signals import PDQ, Hash
from tests.conftest import shared_path


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _full_decode_pdq(data: bytes) -> Hash:
    """The baseline: PIL's full decode and pdqhash on every pixel (no draft, no reduce)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    bits, quality = pdqhash.compute(np.asarray(image))
    return Hash(PDQ, np.packbits(bits.astype(np.uint8)).tobytes(), int(quality))


def _conformance_rows() -> list[dict[str, str]]:
    try:
        path = shared_path("pdq", "expected.csv")
    except pytest.skip.Exception:
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "row", _conformance_rows() or [pytest.param(None, marks=pytest.mark.skip("no test data"))]
)
def test_pdq_conformance(row: dict[str, str]) -> None:
    """Every reference image hashes within its allowed distance, with its quality where given."""
    result = hash_file(shared_path("pdq", row["path"]), signals=["pdq"])
    assert result.ok, result.error
    got = result.hashes["pdq"]
    expected = Hash.from_hex("pdq", row["pdq_hex"])
    assert got - expected <= int(row["max_distance"]), row["source"]
    if row["quality"]:
        assert got.quality == int(row["quality"])


def test_dihedral_names_match_meta_reference_images() -> None:
    folder = shared_path("pdq", "threatexchange-pdq", "reg-test-input", "dih")
    variants = hash_file(folder / "bridge-1-original.jpg", dihedral=True).dihedral
    assert variants is not None and list(variants) == list(DIHEDRAL_NAMES)
    files = {
        "original": "bridge-1-original.jpg",
        "rot90": "bridge-2-rotate-90.jpg",
        "rot180": "bridge-3-rotate-180.jpg",
        "rot270": "bridge-4-rotate-270.jpg",
        "flip_v": "bridge-5-flipx.jpg",
        "flip_h": "bridge-6-flipy.jpg",
        "transpose": "bridge-7-flip-plus-1.jpg",
        "transverse": "bridge-8-flip-minus-1.jpg",
    }
    for name, fname in files.items():
        edited = hash_file(folder / fname, signals=["pdq"]).hashes["pdq"]
        distances = {n: edited - v for n, v in variants.items()}
        assert min(distances, key=distances.__getitem__) == name
        assert distances[name] <= 16


def test_dihedral_variants_follow_numpy_transforms(astronaut: Image.Image) -> None:
    pixels = np.asarray(astronaut)
    variants = pdq_dihedral(astronaut)
    transforms = {
        "rot90": np.rot90(pixels, 1),
        "rot180": np.rot90(pixels, 2),
        "rot270": np.rot90(pixels, 3),
        "flip_v": pixels[::-1],
        "flip_h": pixels[:, ::-1],
        "transpose": pixels.transpose(1, 0, 2),
    }
    for name, array in transforms.items():
        # The variants come from the DCT of the untransformed image; the filter before it is not
        # quite symmetric, so they sit a few bits from hashing the transformed pixels.
        got = pdq(Image.fromarray(np.ascontiguousarray(array)))
        nearest = min(variants, key=lambda n: got - variants[n])
        assert nearest == name and got - variants[name] <= 20, name
    assert variants["original"] == pdq(astronaut)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_on_phone_photos(orientation: int) -> None:
    """The upright picture hashes like the raw pixels turned the way the tag says."""
    path = shared_path(
        "pdq", "threatexchange-pdq", "reg-test-input", "exif-rotn", f"exif-rotn-{orientation}.jpg"
    )
    upright = hash_file(path, signals=["pdq"]).hashes["pdq"]
    raw = Image.open(path)
    raw.draft("RGB", (384, 384))
    raw_variants = pdq_dihedral(raw.convert("RGB"))
    # Orientation 3 is shown turned 180 degrees, 6 turned 90 clockwise, 8 90 counter-clockwise.
    expected = {1: "original", 3: "rot180", 6: "rot270", 8: "rot90"}[orientation]
    # Dihedral variants sit a few bits from hashing turned pixels (see the numpy test above).
    nearest = min(raw_variants, key=lambda n: upright - raw_variants[n])
    assert nearest == expected and upright - raw_variants[expected] <= 20


def test_exif_orientation_on_a_bundled_photo(astronaut: Image.Image) -> None:
    turned = astronaut.transpose(Image.Transpose.ROTATE_270)  # stored turned 90 clockwise...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...and tagged "rotate 90 counter-clockwise to display"
    data = _jpeg(turned, exif=exif)
    assert hash_bytes(data, signals=["pdq"])[0]["pdq"] - pdq(astronaut) <= 10


def test_every_pil_mode_hashes_like_the_original() -> None:
    folder = shared_path("pdq", "threatexchange-pdq", "misc-images", "modes")
    original = hash_file(folder / "original.jpg", signals=["pdq"]).hashes["pdq"]
    files = [p for p in sorted(folder.iterdir()) if p.suffix != ".md"]
    assert len(files) >= 13
    for path in files:
        result = hash_file(path, signals=["pdq", "phash"])
        assert result.ok, (path.name, result.error)
        # The 1-bit mode is dithered, so it is the furthest; it is still a clear match.
        assert result.hashes["pdq"] - original <= 31, path.name


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("1", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("I;16", "PNG"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("LAB", "TIFF"),
        ("I", "TIFF"),
        ("F", "TIFF"),
    ],
)
def test_every_pil_mode_decodes(coffee: Image.Image, mode: str, fmt: str) -> None:
    source = coffee.convert("L").convert(mode) if mode in ("I;16", "I", "F") else coffee
    buf = io.BytesIO()
    source.convert(mode).save(buf, fmt)
    hashes, _ = hash_bytes(buf.getvalue(), signals=["pdq", "phash"])
    assert hashes["pdq"].quality is not None and hashes["pdq"].quality >= 50
    if mode not in ("1", "I", "F", "I;16", "LAB"):
        assert hashes["pdq"] - pdq(coffee) <= 31


def test_alpha_is_ignored(astronaut: Image.Image) -> None:
    """Documented choice: the colour channels are hashed as stored, whatever the alpha says."""
    rgba = astronaut.convert("RGBA")
    rng = np.random.default_rng(7)
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, astronaut.size[::-1], dtype=np.uint8)))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert hash_bytes(buf.getvalue(), signals=["pdq"])[0]["pdq"] == pdq(astronaut)


def test_animated_gif_uses_the_first_frame(astronaut: Image.Image, coffee: Image.Image) -> None:
    first = astronaut.resize((300, 300))
    second = coffee.resize((300, 300))
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    got = hash_bytes(buf.getvalue(), signals=["pdq"])[0]["pdq"]
    assert got - pdq(first.convert("P").convert("RGB")) <= 8
    assert got - pdq(second.convert("P").convert("RGB")) > 60


def test_animated_webp_uses_the_first_frame(astronaut: Image.Image, coffee: Image.Image) -> None:
    first = astronaut.resize((300, 300))
    second = coffee.resize((300, 300))
    buf = io.BytesIO()
    first.save(buf, "WEBP", save_all=True, append_images=[second], duration=100, lossless=True)
    assert hash_bytes(buf.getvalue(), signals=["pdq"])[0]["pdq"] - pdq(first) <= 4


def test_heic_photos_are_hashed(astronaut: Image.Image) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    buf = io.BytesIO()
    pillow_heif.from_pillow(astronaut).save(buf, quality=90)
    assert hash_bytes(buf.getvalue(), signals=["pdq"])[0]["pdq"] - pdq(astronaut) <= 10


def test_truncated_jpeg_is_a_clear_error(astronaut: Image.Image) -> None:
    data = _jpeg(astronaut)
    with pytest.raises(CorruptImage, match="cannot decode"):
        decode_image(data[: len(data) // 2])


def test_garbage_is_unsupported() -> None:
    with pytest.raises(UnsupportedImage):
        decode_image(b"this is not an image at all")
    with pytest.raises(UnsupportedImage):
        decode_image(b"")


def test_pixel_limit_guards_against_bombs(astronaut: Image.Image) -> None:
    data = _jpeg(astronaut)
    with pytest.raises(ImageTooLarge, match="512x512"):
        decode_image(data, max_pixels=512 * 511)
    assert decode_image(data, max_pixels=512 * 512).size == (512, 512)


def test_png_declaring_a_huge_size_is_refused_before_decoding() -> None:
    # A 30000x30000 PNG of one colour compresses to a few kilobytes: a classic bomb.
    import zlib

    width = height = 30000
    raw = zlib.compress(b"\x00" * (width + 1) * 64)  # only the first rows: never decoded

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    with pytest.raises(ImageTooLarge):
        decode_image(png)


def test_every_file_in_formats_gives_a_hash_or_a_clear_error() -> None:
    folder = shared_path("formats")
    results = {Path(r.path).name: r for r in map(hash_file, sorted(folder.iterdir()))}
    assert len(results) >= 12
    for name, result in results.items():
        if "corrupt" in name:
            assert not result.ok and result.error_kind in ("corrupt", "unsupported")
            assert result.error
        else:
            assert result.ok, (name, result.error)
            assert result.hashes["pdq"].quality is not None
    # One photo in five formats: the same picture, whatever the container.
    same = [results[n].hashes["pdq"] for n in results if n.startswith("ukbench09380")]
    assert len(same) == 5 and max(a - b for a in same for b in same) <= 8


def test_phash_matches_imagehash_text(astronaut: Image.Image) -> None:
    assert phash(astronaut).hex == str(imagehash.phash(astronaut))


# Known pHash values (imagehash 4.3 on scikit-image's bundled photos): our own DCT must never
# drift from what imagehash gave when these were enrolled.
KNOWN_PHASHES = {
    "astronaut": "c2924c5532bddfc8",
    "coffee": "bb8320376c0f3637",
    "chelsea": "b15fe6465121175e",
    "camera": "bff1c1c0434e8cbc",
    "rocket": "c0371bec1be51267",
}


@pytest.mark.parametrize("name", sorted(KNOWN_PHASHES))
def test_phash_known_values(name: str) -> None:
    from skimage import data

    image = Image.fromarray(np.asarray(getattr(data, name)()))
    assert phash(image).hex == KNOWN_PHASHES[name]


def _degenerate_pictures() -> list[Image.Image]:
    """Pictures whose DCT has coefficients that cancel exactly (ties with the median): where
    a DCT by matrix product and scipy's FFT-based one could disagree on rounding noise."""
    rng = np.random.default_rng(9)
    pictures = [Image.new("L", (50, 70), v) for v in (0, 1, 128, 255)]
    pictures += [Image.new("RGB", (33, 31), (v, 255 - v, v // 2)) for v in range(0, 256, 51)]
    for period in (1, 2, 3, 4, 8, 16):
        line = ((np.arange(96) // period) % 2 * 255).astype(np.uint8)
        pictures += [
            Image.fromarray(np.tile(line, (96, 1))),
            Image.fromarray(np.tile(line[:, None], (1, 96))),
            Image.fromarray(((line[:, None].astype(int) + line[None, :]) // 2).astype(np.uint8)),
        ]
    pictures += [Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)))]
    pictures += [Image.fromarray((np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8))]
    pictures += [Image.fromarray(rng.integers(0, 256, (s, s), dtype=np.uint8)) for s in (1, 2, 8)]
    pictures += [Image.fromarray(rng.integers(120, 123, (64, 64), dtype=np.uint8))]
    return pictures


def test_phash_is_imagehash_on_degenerate_pictures() -> None:
    for i, picture in enumerate(_degenerate_pictures()):
        assert phash(picture).hex == str(imagehash.phash(picture)), (i, picture.size)


def test_phash_is_imagehash_on_real_photos() -> None:
    folder = shared_path("photos")
    paths = sorted(folder.rglob("*.jpg"))[::10]
    assert len(paths) > 100
    for path in paths:
        with Image.open(path) as image:
            assert phash(image).hex == str(imagehash.phash(image)), path


def test_hashing_needs_no_scipy() -> None:
    """scipy (imported by imagehash's DCT) costs more CPU to import than hashing a photo."""
    import subprocess
    import sys

    code = (
        "import sys, io; from PIL import Image; from matcher.hashing import hash_bytes; "
        "b = io.BytesIO(); Image.new('RGB', (64, 64), 'red').save(b, 'PNG'); "
        "hash_bytes(b.getvalue()); print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'scipy', 'imagehash', 'grpc', 'tqdm', 'numba'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_digests_are_of_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not really a video" * 1000)
    result = hash_file(path)
    assert result.ok
    assert set(result.hashes) == {"md5", "sha256"}  # a video: exact digests only
    assert result.hashes["sha256"].hex == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.hashes["md5"].hex == hashlib.md5(path.read_bytes()).hexdigest()


def test_draft_decode_stays_close_to_the_full_decode(astronaut: Image.Image) -> None:
    """A large JPEG is decoded at reduced scale; the hash must stay within 10 bits."""
    big = astronaut.resize((2048, 2048), Image.Resampling.LANCZOS)
    data = _jpeg(big)
    fast = hash_bytes(data, signals=["pdq"])[0]["pdq"]
    assert decode_image(data).size == (512, 512)  # 1/4 scale: the short side stays >= 384
    assert fast - _full_decode_pdq(data) <= 10


def test_draft_drift_on_real_phone_photos() -> None:
    folder = shared_path("pdq", "threatexchange-pdq", "reg-test-input", "exif-rotn")
    drifts = []
    for path in sorted(folder.glob("*.jpg")):
        data = path.read_bytes()
        fast = hash_bytes(data, signals=["pdq"])[0]["pdq"]
        full = _full_decode_pdq(data)
        assert full.quality >= 80
        drifts.append(fast - full)
    assert max(drifts) <= 10 and np.mean(drifts) <= 4, drifts


def test_folders_are_walked_recursively_and_skip_non_images(
    tmp_path: Path, coffee: Image.Image
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    coffee.save(tmp_path / "a" / "b" / "x.png")
    coffee.save(tmp_path / "a" / "y.jpg")
    (tmp_path / "a" / "notes.txt").write_text("hello")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    assert [Path(p).name for p in iter_files([tmp_path])] == ["y.jpg", "x.png"]
    assert "notes.txt" in [Path(p).name for p in iter_files([tmp_path], all_files=True)]
    # A file named explicitly is always tried, whatever its name.
    assert list(iter_files([tmp_path / "a" / "notes.txt"])) == [str(tmp_path / "a" / "notes.txt")]


def test_unreadable_path_is_reported_not_raised(tmp_path: Path) -> None:
    result = hash_file(tmp_path / "missing.jpg")
    assert not result.ok and result.error_kind == "unreadable"
    assert "path" in result.to_record() and "error" in result.to_record()
