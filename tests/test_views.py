"""Detection views: enrollment and query profiles, and the ``matcher hash --profile`` output.

The story: plain PDQ misses a mirrored, cropped or screenshotted copy of a photo; the shipped
views find it, and still tell different photos apart. Photos come from scikit-image's wheel, so
these tests always run.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from matcher.cli import main
from matcher.errors import InvalidInput
from matcher.hashing import DIHEDRAL_NAMES, hash_file, pdq
from matcher.hashing.views import (
    ENROLL,
    ENROLL_COMPACT,
    ENROLL_LIGHT,
    ENROLL_WIDE,
    MATCH_DISTANCE,
    QUERY,
    EnrollConfig,
    QueryConfig,
    check_profile,
    content_box,
    enroll_views,
    matches,
    picture_boxes,
    picture_views,
    query_views,
    view_names,
)
from matcher.signals import PDQ


def _reencode(image: Image.Image, quality: int = 80) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def astronaut_views(astronaut: Image.Image) -> list:
    return enroll_views(astronaut)


def test_enroll_views_are_deterministic_and_start_with_the_plain_hash(
    astronaut: Image.Image, astronaut_views: list
) -> None:
    names = [n for n, _ in astronaut_views]
    assert names[0] == "full" and astronaut_views[0][1] == pdq(astronaut)
    assert len(set(names)) == len(names)
    most = 1 + len(ENROLL.crops) + len(ENROLL.rotations) + len(ENROLL.filled_rotations)
    assert len(names) <= most + 7 * ENROLL.dihedral + len(ENROLL.mirrored_crops) <= 100
    assert all(h.signal.name == "pdq" and len(h.value) == 32 for _, h in astronaut_views)
    assert enroll_views(astronaut) == astronaut_views


def _flat(kind: str) -> Image.Image:
    """Unrelated flat pictures (PDQ quality below the floor): a sky, a wall, a blurred grey
    patch, and a sky with a small scribbled corner (some of its crops pass the floor)."""
    from PIL import ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:300, 0:400]
    if kind == "sky":
        a = np.dstack([100 + 40 * yy / 300, 150 + 30 * yy / 300, 230 - 20 * yy / 300 + 0 * xx])
    elif kind == "wall":
        a = np.dstack([200 + 10 * xx / 400 + 0 * yy, 190 + 5 * xx / 400 + 0 * yy, 170 + 0 * xx])
    else:
        rng = np.random.default_rng(0)
        a = np.clip(120 + rng.normal(0, 2, (300, 400, 3)), 0, 255)
    image = Image.fromarray(a.astype(np.uint8))
    if kind == "grey":
        return image.filter(ImageFilter.GaussianBlur(3))
    if kind == "scribble":
        rng = np.random.default_rng(1)
        d = ImageDraw.Draw(image)
        for _ in range(60):
            x, y = int(rng.integers(0, 100)), int(rng.integers(220, 290))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            d.line((x, y, x + int(rng.integers(-20, 20)), y + 15), fill=colour, width=2)
    return image


FLAT = ("sky", "wall", "grey", "scribble")


def test_a_flat_picture_enrolls_only_views_above_the_floor_and_no_turns() -> None:
    # Old profile: the black-cornered rotations of these pictures were 6-28 bits apart.
    views = {kind: enroll_views(_flat(kind)) for kind in FLAT}
    for kind, vs in views.items():
        assert not PDQ.meets_floor(pdq(_flat(kind)).quality), kind
        assert all(PDQ.meets_floor(h.quality) for _, h in vs), kind
        assert not [n for n, _ in vs if n == "full" or n.startswith(("dih/", "rotfill"))], kind
    assert views["sky"] == [] and views["wall"] == [] and views["grey"] == []
    assert views["scribble"], "a crop of the scribbled corner is a usable view"
    for a in FLAT:
        for b in FLAT:
            if a != b:
                assert not matches(views[a], views[b]), (a, b)


def test_a_photo_keeps_its_views(astronaut_views: list) -> None:
    names = [n for n, _ in astronaut_views]
    assert {f"dih/{v}" for v in DIHEDRAL_NAMES if v != "original"} <= set(names)
    assert sum(n.startswith("rotfill") for n in names) == len(ENROLL.filled_rotations)
    assert sum(n.startswith("mcrop") for n in names) == len(ENROLL.mirrored_crops) == 20
    assert 90 <= len(names) <= 100  # issue 14: at most 100 stored hashes per image
    assert all(PDQ.meets_floor(h.quality) for _, h in astronaut_views)


def test_query_views_hold_the_plain_hash_and_its_dihedral_variants(astronaut: Image.Image) -> None:
    views = query_views(astronaut)
    names = [n for n, _ in views]
    assert names[0] == "full" and views[0][1] == pdq(astronaut)
    assert {f"full/{v}" for v in DIHEDRAL_NAMES if v != "original"} <= set(names)
    assert len(set(names)) == len(names)
    assert query_views(astronaut) == views


def test_content_box_finds_a_photo_inside_borders(astronaut: Image.Image) -> None:
    assert content_box(astronaut) is None
    framed = ImageOps.expand(astronaut, border=(40, 200, 40, 260), fill=(255, 255, 255))
    left, top, right, bottom = content_box(_reencode(framed))  # type: ignore[misc]
    assert abs(left - 40) <= 3 and abs(top - 200) <= 3
    assert abs(right - (40 + 512)) <= 3 and abs(bottom - (200 + 512)) <= 3


def _screenshot(image: Image.Image) -> Image.Image:
    """The photo at screen width inside a white phone screen with a header and a footer."""
    screen = Image.new("RGB", (600, 1300), (255, 255, 255))
    from PIL import ImageDraw

    d = ImageDraw.Draw(screen)
    d.text((20, 10), "12:34", fill=(0, 0, 0))
    d.ellipse((20, 60, 70, 110), fill=(200, 40, 90))
    d.text((90, 80), "someone", fill=(0, 0, 0))
    screen.paste(image.resize((600, 600)), (0, 140))
    for i in range(3):
        d.ellipse((20 + i * 50, 760, 56 + i * 50, 796), outline=(0, 0, 0), width=3)
    d.text((20, 820), "1,234 likes", fill=(0, 0, 0))
    return screen


def _desktop_browser(image: Image.Image) -> Image.Image:
    """The photo at full page height between dark margins, under a browser's chrome that spans
    the whole width (so no uniform border can be trimmed from the sides)."""
    from PIL import ImageDraw

    screen = Image.new("RGB", (1366, 768), (14, 14, 14))
    d = ImageDraw.Draw(screen)
    d.rectangle((0, 0, 1366, 86), fill=(222, 225, 230))
    d.rounded_rectangle((12, 6, 220, 40), radius=8, fill=(255, 255, 255))
    d.text((40, 14), "astronaut.png", fill=(30, 30, 30))
    d.rounded_rectangle((130, 47, 1270, 79), radius=16, fill=(241, 243, 244))
    d.text((150, 56), "https://example.com/astronaut.png", fill=(30, 30, 30))
    screen.paste(image.resize((682, 682)), (342, 86))
    return screen


def _pasted(image: Image.Image) -> Image.Image:
    """The photo at 55% of the frame, pasted off-centre over an unrelated photo."""
    from skimage import data

    background = Image.fromarray(np.asarray(data.coffee())).resize((640, 480))
    background.paste(image.resize((264, 264)), (301, 167))
    return background


def _mirrored_crop(image: Image.Image) -> Image.Image:
    """Mirrored, 12% cut off the left and the top, shrunk: neither a crop nor a mirror alone."""
    w, h = image.size
    out = ImageOps.mirror(image).crop((round(w * 0.12), round(h * 0.12), w, h))
    return out.resize((out.width * 3 // 4, out.height * 3 // 4))


EDITS = {
    "mirror": lambda im: ImageOps.mirror(im),
    "mirrored_crop": _mirrored_crop,
    "rot90_half": lambda im: im.transpose(Image.Transpose.ROTATE_90).resize((256, 256)),
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "crop_15%_offset": lambda im: im.crop((0, 77, 435, 512)),
    "border": lambda im: ImageOps.expand(im, border=60, fill=(20, 120, 200)),
    "screenshot": _screenshot,
    "desktop_browser": _desktop_browser,
    "pasted_over_a_photo": _pasted,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_views_find_what_plain_pdq_misses(
    edit: str, astronaut: Image.Image, astronaut_views: list
) -> None:
    query = _reencode(EDITS[edit](astronaut))
    assert pdq(query) - pdq(astronaut) > MATCH_DISTANCE, "plain PDQ already matches this edit"
    assert matches(query_views(query), astronaut_views)


def test_mirrored_crops_are_crops_of_the_mirrored_picture(
    astronaut: Image.Image, astronaut_views: list
) -> None:
    # Placed on the mirrored picture as ``crops`` are on the picture: the enrolled mcrop of a
    # picture is, bit for bit, the crop of the same name enrolled from its mirror image.
    mirrored = enroll_views(ImageOps.mirror(astronaut), EnrollConfig(ENROLL.mirrored_crops, ()))
    ours = {n[1:]: h for n, h in astronaut_views if n.startswith("mcrop")}
    assert len(ours) == len(ENROLL.mirrored_crops)
    assert {n: h for n, h in mirrored if n.startswith("crop")} == ours


def test_mirrored_query_crops_are_the_mirror_of_the_crop(astronaut: Image.Image) -> None:
    # qmcrop<s>@<x>,<y> of an upload is (up to PDQ's own flip error) the crop of the mirrored
    # upload at the reflected place: what meets an enrolled mirrored crop.
    views = dict(query_views(astronaut))
    mirrored = dict(
        query_views(ImageOps.mirror(astronaut), QueryConfig(crops=QUERY.mirrored_crops))
    )
    assert len(QUERY.mirrored_crops) == 4 and len(QUERY.crops) == 5
    for scale, x, y in QUERY.mirrored_crops:
        a = views[f"qmcrop{scale:g}@{x:g},{y:g}"]
        b = mirrored[f"qcrop{scale:g}@{1 - x:g},{y:g}"]
        assert a - b <= 16, (x, y, a - b)


def test_picture_boxes_find_a_pasted_photo(astronaut: Image.Image) -> None:
    boxes = picture_boxes(_reencode(_pasted(astronaut)))
    assert any(
        max(abs(a - b) for a, b in zip(box, (301, 167, 565, 431), strict=True)) <= 2
        for box in boxes
    )
    assert picture_boxes(Image.new("RGB", (64, 64))) == []


def _browser_window(image: Image.Image, windowed: bool = True, dark: bool = False) -> Image.Image:
    """A desktop screenshot: a photo wallpaper, and over it a browser window (a light tab strip
    and address bar across its width, text on it) showing ``image`` at full page height between
    dark margins, so no uniform border surrounds the photo; or maximised (no wallpaper). ``dark``:
    dark chrome, a few grey levels from the page's margins."""
    from PIL import ImageDraw
    from skimage import data

    screen = Image.fromarray(np.asarray(data.coffee())).resize((1280, 800))
    d = ImageDraw.Draw(screen)
    x0, y0, ww, wh = (170, 90, 960, 620) if windowed else (0, 0, 1280, 800)
    light = ((222, 225, 230), (250, 250, 250), (255, 255, 255), (30, 30, 30), (60, 60, 60))
    dark_colours = ((32, 33, 36), (53, 54, 58), (53, 54, 58), (232, 234, 237), (232, 234, 237))
    bar, tab, field, ink, url = dark_colours if dark else light
    d.rectangle((x0, y0, x0 + ww - 1, y0 + 84), fill=bar)
    d.rounded_rectangle((x0 + 12, y0 + 8, x0 + 230, y0 + 38), radius=8, fill=tab)
    d.text((x0 + 24, y0 + 16), "photo.jpg (512x512)", fill=ink)
    d.rounded_rectangle((x0 + 80, y0 + 46, x0 + ww - 40, y0 + 76), radius=14, fill=field)
    d.text((x0 + 100, y0 + 54), "https://example.org/photo.jpg", fill=url)
    d.rectangle((x0, y0 + 85, x0 + ww - 1, y0 + wh - 1), fill=(14, 14, 14))
    side = wh - 85
    screen.paste(image.resize((side, side)), (x0 + (ww - side) // 2, y0 + 85))
    return screen


def _finder_match(upload: Image.Image, photo: Image.Image) -> tuple[int, int]:
    """The nearest distance to ``photo`` among the finder's views of ``upload``, and among the
    other query views (the finder turned off)."""
    target = pdq(photo)
    found = [h for _, h in picture_views(upload)]
    rest = query_views(upload, dataclasses.replace(QUERY, rectangles=0, nested=(0, 0)))
    return min(h - target for h in found), min(h - target for _, h in rest)


def test_the_finder_matches_a_pasted_photo_that_the_other_views_miss(
    astronaut: Image.Image,
) -> None:
    found, rest = _finder_match(_reencode(_pasted(astronaut)), astronaut)
    assert found <= MATCH_DISTANCE < rest, (found, rest)


def test_the_finder_matches_a_photo_in_a_maximised_browser_screenshot(
    astronaut: Image.Image,
) -> None:
    upload = _reencode(_browser_window(astronaut, windowed=False), quality=90)
    found, rest = _finder_match(upload, astronaut)
    assert found <= MATCH_DISTANCE < rest, (found, rest)


def test_the_finder_matches_a_photo_in_a_browser_window_over_a_wallpaper(
    astronaut: Image.Image,
) -> None:
    """The window is found, but its chrome spans the width above the page's margins: the
    finder cuts the chrome off before it trims them (and looks past the JPEG ringing the
    wallpaper leaves in the window's first columns)."""
    upload = _reencode(_browser_window(astronaut), quality=90)
    found, rest = _finder_match(upload, astronaut)
    assert found <= MATCH_DISTANCE < rest, (found, rest)


def test_the_finder_matches_a_photo_in_a_dark_browser_window() -> None:
    """Dark chrome lies within the trim's tolerance of the page's dark margins, and the window's
    first columns carry the wallpaper's JPEG ringing: the photo is still found inside it."""
    from skimage import data

    photo = Image.fromarray(np.asarray(data.rocket()))
    upload = _reencode(_browser_window(photo, dark=True), quality=90)
    found, rest = _finder_match(upload, photo)
    assert found <= MATCH_DISTANCE < rest, (found, rest)


def test_the_finder_proposes_no_box_on_plain_photos() -> None:
    """Every box is up to 6 more index searches: a cat in fur and whiskers, and a cup on a table
    (straight table edges, a round rim), are not pictures inside pictures."""
    from skimage import data

    for photo in (data.chelsea(), data.coffee()):
        upload = _reencode(Image.fromarray(np.asarray(photo)))
        assert picture_boxes(upload, 8) == []
        assert picture_views(upload) == []


def test_views_tell_different_photos_apart(astronaut_views: list) -> None:
    from skimage import data

    for name in ("coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field"):
        pixels = np.asarray(getattr(data, name)())
        other = Image.fromarray(pixels).convert("RGB")
        assert not matches(query_views(other), astronaut_views), name
        assert not matches(query_views(_reencode(ImageOps.mirror(other))), astronaut_views), name


def test_lighter_and_wider_enroll_profiles(astronaut: Image.Image) -> None:
    light = check_profile("enroll-light")(astronaut)  # type: ignore[misc]
    wide = check_profile("enroll-wide")(astronaut)  # type: ignore[misc]
    assert len(view_names(ENROLL)) == 100  # issue 14: at most 100
    assert {n for n, _ in light} <= {n for n, _ in wide}
    assert len(light) <= len(view_names(ENROLL_LIGHT)) == 39
    assert len(wide) <= len(view_names(ENROLL_WIDE)) == 223
    compact = check_profile("enroll-compact")(astronaut)  # type: ignore[misc]
    assert {n for n, _ in compact} <= {n for n, _ in wide}
    assert len(compact) <= len(view_names(ENROLL_COMPACT)) == 95  # issue 14: at most 100


def test_unknown_profile_is_refused() -> None:
    assert check_profile("plain") is None
    with pytest.raises(InvalidInput, match="profile"):
        check_profile("fast")


def test_hash_file_with_a_profile(tmp_path: Path, astronaut: Image.Image) -> None:
    path = tmp_path / "a.png"
    astronaut.save(path)
    result = hash_file(path, signals=["pdq"], profile="query")
    assert result.ok and result.views is not None
    assert result.views[0] == ("full", result.hashes["pdq"])
    assert hash_file(path, signals=["pdq"]).views is None


def test_cli_profile_outputs_named_views(tmp_path: Path, astronaut: Image.Image) -> None:
    path = tmp_path / "astronaut.png"
    astronaut.save(path)
    plain = CliRunner().invoke(main, ["hash", "-j", "1", "--signals", "pdq", str(path)])
    assert plain.exit_code == 0, plain.output
    assert "pdq_views" not in json.loads(plain.stdout)

    result = CliRunner().invoke(
        main, ["hash", "-j", "1", "--signals", "pdq", "--profile", "enroll", str(path)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    views = record["pdq_views"]
    assert views["full"] == record["pdq"]
    assert list(views) == [n for n, _ in enroll_views(astronaut)]
    assert all(len(v) == 64 for v in views.values())

    csv_out = CliRunner().invoke(
        main, ["hash", "-j", "1", "--format", "csv", "--profile", "query", str(path)]
    )
    assert csv_out.exit_code == 0, csv_out.output
    header, row = csv_out.stdout.splitlines()[:2]
    assert "pdq_views" in header.split(",")
    assert "full/rot90=" in row

    bad = CliRunner().invoke(main, ["hash", "--profile", "fast", str(path)])
    assert bad.exit_code == 2
