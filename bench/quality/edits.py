"""Fixed-seed edits of a photo, in the tiers of issue 6.

Each edit takes the original (an RGB PIL image), a seeded random generator and the pool of other
originals (for collages), and returns the bytes of the file a re-uploader would post. The bytes are
then decoded by ``matcher.hashing.decode_image``, exactly as the client would. Most edits end with
a JPEG at quality 85, which is what platforms commonly re-encode to; the codec edits choose their
own encoding.

Tiers:
    A  photometric and re-encoding      D  crops of 5-20% (also at a corner), rotations 2-5 deg
    B  mirror and quarter turns         E  overlays: caption bar, sticker, text, watermark
    C  borders and screenshots          F  30% crops and 2x2 collages
    G  the photo inside a desktop, phone or messaging screenshot (issue 14)
    H  the photo pasted at 40-80% over another photo (issue 14)
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["EDITS", "TIERS", "Edit", "apply_edit"]

TIERS: dict[str, str] = {
    "A": "photometric and re-encoding",
    "B": "mirror and quarter turns",
    "C": "borders, padding, screenshots",
    "D": "crops 5-20% (also mirrored, corner-anchored), rotations 2-5 degrees",
    "E": "overlays: caption, sticker, text, watermark",
    "F": "30% crops and 2x2 collages",
    "G": "desktop, phone-landscape and messaging screenshots",
    "H": "picture in picture: pasted at 40-80% over another photo",
}

Others = Sequence[Image.Image]
EditFn = Callable[[Image.Image, np.random.Generator, Others], bytes]


@dataclass(frozen=True)
class Edit:
    """One named edit in one tier."""

    name: str
    tier: str
    fn: EditFn


def _encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    return _encode(image.convert("RGB"), "JPEG", quality=quality)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's bundled scalable font: the same glyphs on every machine, no system font needed.
    return ImageFont.load_default(size=max(8, int(size)))


_TEXT = (
    "omg look at this when you see it lol no way best night ever who is she "
    "send this to everyone tag a friend guess who this is haha wow so hot"
)
_WORDS = tuple(_TEXT.split())


def _phrase(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(_WORDS, size=n))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))  # type: ignore[return-value]


# --- A: photometric and re-encoding --------------------------------------------------------


def _jpeg_q(q: int) -> EditFn:
    return lambda im, rng, others: _jpeg(im, q)


def _webp(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    return _encode(im, "WEBP", quality=50)


def _resize(factor: float) -> EditFn:
    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        w, h = im.size
        return _jpeg(im.resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC))

    return fn


def _greyscale(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    return _jpeg(ImageOps.grayscale(im).convert("RGB"))


def _enhance(kind: type, factor: float) -> EditFn:
    return lambda im, rng, others: _jpeg(kind(im).enhance(factor))


def _blur(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    return _jpeg(im.filter(ImageFilter.GaussianBlur(2.0)))


def _sharpen(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    return _jpeg(im.filter(ImageFilter.UnsharpMask(radius=2, percent=200, threshold=2)))


def _noise(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    a = np.asarray(im).astype(np.float32) + rng.normal(0, 12, size=(im.height, im.width, 3))
    return _jpeg(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))


# --- B: mirror and quarter turns ------------------------------------------------------------


def _transpose(op: Image.Transpose, quality: int = 85, factor: float = 1.0) -> EditFn:
    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        out = im.transpose(op)
        if factor != 1.0:
            out = out.resize((round(out.width * factor), round(out.height * factor)))
        return _jpeg(out, quality)

    return fn


# --- C: borders, padding, screenshots -------------------------------------------------------


def _pad_to(im: Image.Image, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, colour)
    canvas.paste(im, ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
    return canvas


def _letterbox(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    # Into a 9:16 portrait frame (a phone video or story): black bars above and below.
    w, h = im.size
    target_h = max(h, round(w * 16 / 9))
    return _jpeg(_pad_to(im, (w, target_h), (0, 0, 0)))


def _pillarbox(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    # Into a 16:9 frame with the picture scaled to its height: bars left and right.
    w, h = im.size
    if w / h >= 16 / 9:
        return _jpeg(_pad_to(im, (w, round(w * 9 / 16)), (0, 0, 0)))
    return _jpeg(_pad_to(im, (round(h * 16 / 9), h), (0, 0, 0)))


def _border(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    w, h = im.size
    b = round(min(w, h) * rng.uniform(0.04, 0.12))
    colour = (255, 255, 255) if rng.random() < 0.5 else _colour(rng)
    return _jpeg(ImageOps.expand(im, border=b, fill=colour))


def _square_pad(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    side = max(im.size)
    return _jpeg(_pad_to(im, (side, side), (255, 255, 255)))


def _square_blur_pad(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    # The "fit to square" of many apps: the picture over a blurred, zoomed copy of itself.
    side = max(im.size)
    background = im.resize((side, side)).filter(ImageFilter.GaussianBlur(side / 20))
    background.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return _jpeg(background)


def _screenshot(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    """The photo as seen in a social app on a phone, captured as a screenshot (PNG or JPEG)."""
    dark = bool(rng.random() < 0.5)
    bg, fg, muted = ((0, 0, 0), (245, 245, 245), (140, 140, 140))
    if not dark:
        bg, fg, muted = (255, 255, 255), (20, 20, 20), (120, 120, 120)
    sw, sh = 720, 1560  # a 9:19.5 phone screen at half resolution
    screen = Image.new("RGB", (sw, sh), bg)
    d = ImageDraw.Draw(screen)
    # Status bar: time on the left, signal bars and battery on the right.
    d.text(
        (28, 14), f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}", fill=fg, font=_font(28)
    )
    for i in range(4):
        d.rectangle((560 + i * 12, 38 - i * 6, 568 + i * 12, 44), fill=fg)
    d.rounded_rectangle((630, 18, 690, 44), radius=6, outline=fg, width=3)
    d.rectangle((636, 24, 636 + int(rng.integers(10, 48)), 38), fill=fg)
    # App header: avatar, user name, menu dots.
    top = 70
    d.ellipse((24, top + 14, 84, top + 74), fill=_colour(rng))
    d.text((100, top + 28), "user_" + str(rng.integers(1000, 9999)), fill=fg, font=_font(26))
    for i in range(3):
        d.ellipse((670, top + 30 + i * 12, 678, top + 38 + i * 12), fill=fg)
    # The photo, scaled to the screen width (apps crop very tall photos, not these).
    y0 = top + 90
    ph = round(im.height * sw / im.width)
    screen.paste(im.resize((sw, ph), Image.Resampling.BICUBIC), (0, y0))
    # Action icons, likes, caption, comments, bottom navigation bar.
    y = y0 + ph + 20
    for i in range(3):
        d.ellipse((24 + i * 64, y, 68 + i * 64, y + 44), outline=fg, width=4)
    y += 64
    d.text((24, y), f"{rng.integers(10, 99999):,} likes", fill=fg, font=_font(26))
    d.text((24, y + 40), _phrase(rng, 6), fill=fg, font=_font(24))
    d.text((24, y + 76), "View all comments", fill=muted, font=_font(24))
    d.line((0, sh - 110, sw, sh - 110), fill=muted, width=1)
    for i in range(5):
        x = 60 + i * 140
        d.rounded_rectangle((x, sh - 86, x + 44, sh - 42), radius=8, outline=fg, width=4)
    if rng.random() < 0.5:
        return _encode(screen, "PNG")
    return _jpeg(screen, 90)


# --- D: crops and small rotations -----------------------------------------------------------


def _crop(fraction: float, centred: bool) -> EditFn:
    """Remove ``fraction`` of the width and of the height; centred, or at a random offset."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        w, h = im.size
        cw, ch = round(w * (1 - fraction)), round(h * (1 - fraction))
        if centred:
            x, y = (w - cw) // 2, (h - ch) // 2
        else:
            # Off-centre: the kept window touches at least one edge more than the other.
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
        return _jpeg(im.crop((x, y, x + cw, y + ch)))

    return fn


def _crop_random(lo: float, hi: float, centred: bool) -> EditFn:
    """Remove a random fraction in [lo, hi] of each side: sizes that fall between enrolled ones."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        return _crop(float(rng.uniform(lo, hi)), centred)(im, rng, others)

    return fn


def _mirror_crop(lo: float, hi: float) -> EditFn:
    """Mirrored, then a random fraction in [lo, hi] of each side removed at a random offset,
    shrunk to 75% and re-encoded: a re-upload that is both flipped and cropped (the service
    test's astronaut). The query crops are not mirrored, so only the upload's own mirrored hashes
    can meet an enrolled crop."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        fraction = float(rng.uniform(lo, hi))
        mirrored = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = mirrored.size
        cw, ch = round(w * (1 - fraction)), round(h * (1 - fraction))
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        out = mirrored.crop((x, y, x + cw, y + ch))
        out = out.resize((cw * 3 // 4, ch * 3 // 4), Image.Resampling.BICUBIC)
        return _jpeg(out, 70)

    return fn


def _corner_crop(lo: float, hi: float, same: bool = True) -> EditFn:
    """Keep a random share in [lo, hi] of each side, the window anchored at a random corner (two
    sides cut, two kept): how a crop tool dragged from one corner cuts, or a screenshot of part of
    a photo. The other crop edits place the window uniformly, so they seldom touch a corner, and
    enrolled grids placed for them can miss it. ``same``: one share for both sides (the aspect
    kept), else one per side (a free-form crop)."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        w, h = im.size
        kw = float(rng.uniform(lo, hi))
        kh = kw if same else float(rng.uniform(lo, hi))
        cw, ch = round(w * kw), round(h * kh)
        corner = int(rng.integers(4))
        x = 0 if corner in (0, 2) else w - cw
        y = 0 if corner in (0, 1) else h - ch
        return _jpeg(im.crop((x, y, x + cw, y + ch)))

    return fn


def _rotate(degrees: float, crop: bool) -> EditFn:
    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        angle = degrees if rng.random() < 0.5 else -degrees
        out = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
        if crop:
            # Keep the largest centred rectangle of the original's aspect with no empty corner.
            w, h = im.size
            a = math.radians(abs(angle))
            s = 1 / (math.cos(a) + max(w / h, h / w) * math.sin(a))
            cw, ch = round(w * s), round(h * s)
            out = out.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))
        return _jpeg(out)

    return fn


# --- E: overlays ----------------------------------------------------------------------------


def _caption(position: str) -> EditFn:
    """A meme caption: a bar of 15-25% of the height, above or below, with one or two lines."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        w, h = im.size
        bar = round(h * rng.uniform(0.15, 0.25))
        white = position == "top"
        canvas = Image.new("RGB", (w, h + bar), (255, 255, 255) if white else (0, 0, 0))
        canvas.paste(im, (0, bar if position == "top" else 0))
        d = ImageDraw.Draw(canvas)
        size = bar // 3
        y = 0 if position == "top" else h
        text = _phrase(rng, 4)
        d.text(
            (w // 2, y + bar // 2),
            text,
            fill=(0, 0, 0) if white else (255, 255, 255),
            font=_font(size),
            anchor="mm",
        )
        return _jpeg(canvas)

    return fn


def _emoji(d: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, _ = box
    s = x1 - x0
    d.ellipse(box, fill=(255, 204, 51), outline=(200, 140, 0), width=max(1, s // 30))
    d.ellipse((x0 + s * 0.28, y0 + s * 0.3, x0 + s * 0.4, y0 + s * 0.45), fill=(60, 40, 20))
    d.ellipse((x0 + s * 0.6, y0 + s * 0.3, x0 + s * 0.72, y0 + s * 0.45), fill=(60, 40, 20))
    d.arc(
        (x0 + s * 0.25, y0 + s * 0.35, x0 + s * 0.75, y0 + s * 0.78),
        20,
        160,
        fill=(60, 40, 20),
        width=max(2, s // 15),
    )


def _sticker(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    """One emoji sticker (diameter 20-30% of the short side) somewhere on the photo."""
    out = im.copy()
    d = ImageDraw.Draw(out)
    w, h = im.size
    s = round(min(w, h) * rng.uniform(0.20, 0.30))
    x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
    _emoji(d, (x, y, x + s, y + s))
    return _jpeg(out)


def _text(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    """White text with a black outline across the lower part, as phone editors draw it."""
    out = im.copy()
    d = ImageDraw.Draw(out)
    w, h = im.size
    size = round(h * 0.09)
    y = h * rng.uniform(0.6, 0.85)
    d.text(
        (w / 2, y),
        _phrase(rng, 4),
        fill=(255, 255, 255),
        font=_font(size),
        anchor="mm",
        stroke_width=max(1, size // 12),
        stroke_fill=(0, 0, 0),
    )
    return _jpeg(out)


def _watermark(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    """A site watermark tiled diagonally at 30% opacity."""
    w, h = im.size
    layer = Image.new("RGBA", (w * 2, h * 2), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    label = "@site" + str(rng.integers(10, 99))
    size = round(min(w, h) * 0.08)
    for y in range(0, h * 2, size * 4):
        for x in range(0, w * 2, size * 6):
            d.text((x, y), label, fill=(255, 255, 255, 80), font=_font(size))
    layer = layer.rotate(30, center=(w, h)).crop((w // 2, h // 2, w // 2 + w, h // 2 + h))
    return _jpeg(Image.alpha_composite(im.convert("RGBA"), layer))


# --- F: heavy crops and collages ------------------------------------------------------------


def _collage(gutter: bool) -> EditFn:
    """The photo in a random cell of a 2x2 grid with three other photos."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        w, h = im.size
        g = round(min(w, h) * 0.03) if gutter else 0
        cells = [im] + [others[i] for i in rng.choice(len(others), size=3, replace=False)]
        order = rng.permutation(4)
        canvas = Image.new("RGB", (2 * w + 3 * g, 2 * h + 3 * g), (255, 255, 255))
        for slot, k in enumerate(order):
            cell = cells[k].resize((w, h), Image.Resampling.BICUBIC)
            canvas.paste(cell, (g + (slot % 2) * (w + g), g + (slot // 2) * (h + g)))
        return _jpeg(canvas)

    return fn


# --- G: screenshots of windows and apps (issue 14) ------------------------------------------

_DARK_CHROME = {
    "bar": (32, 33, 36),
    "tab": (53, 54, 58),
    "field": (32, 33, 36),
    "fg": (232, 234, 237),
}
_LIGHT_CHROME = {
    "bar": (222, 225, 230),
    "tab": (255, 255, 255),
    "field": (241, 243, 244),
    "fg": (32, 33, 36),
}


def _browser_chrome(
    d: ImageDraw.ImageDraw,
    x0: int,
    y0: int,
    w: int,
    rng: np.random.Generator,
    theme: dict[str, tuple[int, int, int]],
    scale: float,
) -> int:
    """Draw a browser's tab strip, toolbar and (maybe) bookmarks bar; return the chrome height."""
    tab_h, bar_h = round(40 * scale), round(46 * scale)
    bookmarks = bool(rng.random() < 0.5)
    height = tab_h + bar_h + (round(30 * scale) if bookmarks else 0)
    d.rectangle((x0, y0, x0 + w, y0 + height), fill=theme["bar"])
    x = x0 + round(12 * scale)
    for k in range(int(rng.integers(1, 6))):
        tw = round(rng.uniform(140, 240) * scale)
        fill = theme["tab"] if k == 0 else theme["bar"]
        d.rounded_rectangle(
            (x, y0 + round(6 * scale), x + tw, y0 + tab_h), radius=round(8 * scale), fill=fill
        )
        d.text(
            (x + round(30 * scale), y0 + round(14 * scale)),
            _phrase(rng, 2)[:18],
            fill=theme["fg"],
            font=_font(13 * scale),
        )
        d.ellipse(
            (
                x + round(10 * scale),
                y0 + round(16 * scale),
                x + round(22 * scale),
                y0 + round(28 * scale),
            ),
            fill=_colour(rng),
        )
        x += tw + round(2 * scale)
    top = y0 + tab_h
    d.rectangle((x0, top, x0 + w, top + bar_h), fill=theme["tab"])
    for i in range(3):  # back, forward, reload
        cx = x0 + round((20 + 34 * i) * scale)
        d.ellipse(
            (cx, top + round(15 * scale), cx + round(16 * scale), top + round(31 * scale)),
            outline=theme["fg"],
            width=max(1, round(2 * scale)),
        )
    fx = x0 + round(130 * scale)
    d.rounded_rectangle(
        (fx, top + round(7 * scale), x0 + w - round(90 * scale), top + bar_h - round(7 * scale)),
        radius=round(16 * scale),
        fill=theme["field"],
    )
    d.text(
        (fx + round(16 * scale), top + round(15 * scale)),
        "https://example.com/" + "/".join(_phrase(rng, 3).split()) + ".jpg",
        fill=theme["fg"],
        font=_font(14 * scale),
    )
    for i in range(3):
        cx = x0 + w - round((70 - 22 * i) * scale)
        d.ellipse(
            (cx, top + round(17 * scale), cx + round(12 * scale), top + round(29 * scale)),
            fill=theme["fg"],
        )
    if bookmarks:
        by = top + bar_h
        for i in range(int(rng.integers(3, 9))):
            bx = x0 + round((16 + 110 * i) * scale)
            d.text(
                (bx, by + round(8 * scale)),
                _phrase(rng, 1),
                fill=theme["fg"],
                font=_font(12 * scale),
            )
    d.line(
        (x0, y0 + height - 1, x0 + w, y0 + height - 1),
        fill=(0, 0, 0) if theme is _DARK_CHROME else (200, 200, 200),
    )
    return height


def _fit(im: Image.Image, w: int, h: int) -> Image.Image:
    s = min(w / im.width, h / im.height)
    return im.resize(
        (max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC
    )


# A study's hook: when a list, each desktop screenshot appends where it put the window, the page
# below the chrome and the photo, as (left, top, right, bottom) on the screen (``screen``: its
# size), so that a miss can be told apart (window not found, chrome or margins left on, photo
# misplaced) and the true photo's crop hashed (what the finder could reach at best).
LAYOUTS: list[dict[str, tuple[int, int, int, int]]] | None = None


def _desktop_browser(windowed: bool) -> EditFn:
    """A desktop screenshot of a browser showing the photo by itself: chrome across the window's
    width, the photo at the full height of the page between dark margins (how browsers show an
    image), light or dark theme, maybe a taskbar; maximised, or a window over a photo wallpaper."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        sw, sh = [(1366, 768), (1440, 900), (1920, 1080), (1280, 800)][int(rng.integers(4))]
        scale = 1.0 if sw <= 1440 else 1.25
        theme = _DARK_CHROME if rng.random() < 0.5 else _LIGHT_CHROME
        if windowed:
            wallpaper = others[int(rng.integers(len(others)))]
            screen = wallpaper.resize((sw, sh), Image.Resampling.BICUBIC)
            ww, wh = round(sw * rng.uniform(0.6, 0.85)), round(sh * rng.uniform(0.7, 0.9))
            x0, y0 = int(rng.integers(0, sw - ww)), int(rng.integers(0, sh - wh))
        else:
            screen = Image.new("RGB", (sw, sh))
            ww, wh, x0, y0 = sw, sh, 0, 0
        d = ImageDraw.Draw(screen)
        taskbar = round(40 * scale) if (not windowed and rng.random() < 0.5) else 0
        chrome = _browser_chrome(d, x0, y0, ww, rng, theme, scale)
        margin = (14, 14, 14) if rng.random() < 0.5 else (38, 38, 38)
        page_top, page_bottom = y0 + chrome, y0 + wh - taskbar
        d.rectangle((x0, page_top, x0 + ww - 1, page_bottom - 1), fill=margin)
        photo = _fit(im, ww, page_bottom - page_top)
        px = x0 + (ww - photo.width) // 2
        py = page_top + (page_bottom - page_top - photo.height) // 2
        screen.paste(photo, (px, py))
        if LAYOUTS is not None:
            LAYOUTS.append(
                {
                    "screen": (0, 0, sw, sh),
                    "window": (x0, y0, x0 + ww, y0 + wh),
                    "page": (x0, page_top, x0 + ww, page_bottom),
                    "photo": (px, py, px + photo.width, py + photo.height),
                }
            )
        if taskbar:
            d.rectangle(
                (0, sh - taskbar, sw, sh),
                fill=(20, 24, 32) if theme is _DARK_CHROME else (235, 238, 242),
            )
            for i in range(int(rng.integers(4, 10))):
                d.rounded_rectangle(
                    (sw // 3 + i * 48, sh - taskbar + 6, sw // 3 + i * 48 + 28, sh - 6),
                    radius=6,
                    fill=_colour(rng),
                )
            d.text(
                (sw - 90, sh - taskbar + 12),
                f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
                fill=(230, 230, 230) if theme is _DARK_CHROME else (30, 30, 30),
                font=_font(14),
            )
        if rng.random() < 0.5:
            return _encode(screen, "PNG")
        return _jpeg(screen, 90)

    return fn


def _phone_landscape(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    """A phone held sideways in a gallery or video app: the photo at full height between black
    side bars, with the app's controls drawn over the bars and the top of the photo."""
    sw, sh = [(1560, 720), (1480, 720), (1600, 740)][int(rng.integers(3))]
    screen = Image.new("RGB", (sw, sh))
    photo = _fit(im, sw, sh)
    screen.paste(photo, ((sw - photo.width) // 2, (sh - photo.height) // 2))
    d = ImageDraw.Draw(screen)
    fg = (240, 240, 240)
    d.text(
        (40, 16), f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}", fill=fg, font=_font(24)
    )
    d.rounded_rectangle((sw - 100, 18, sw - 50, 40), radius=5, outline=fg, width=3)
    for i in range(3):  # share, edit, delete icons on the bottom of the right bar
        y = sh // 2 - 90 + i * 70
        d.rounded_rectangle((sw - 80, y, sw - 40, y + 40), radius=8, outline=fg, width=3)
    d.ellipse((30, sh // 2 - 20, 70, sh // 2 + 20), outline=fg, width=3)  # back button
    if rng.random() < 0.5:
        return _encode(screen, "PNG")
    return _jpeg(screen, 90)


def _messaging(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
    """A phone screenshot of a chat: header with a contact, message bubbles, the photo sent as a
    message in a rounded bubble of 60-80% of the screen width, a time stamp, the input bar."""
    dark = bool(rng.random() < 0.5)
    sw, sh = 720, 1560
    bg = (11, 20, 26) if dark else (236, 229, 221)
    fg = (233, 237, 239) if dark else (17, 27, 33)
    bubble = (0, 92, 75) if dark else (217, 253, 211)
    other_bubble = (32, 44, 51) if dark else (255, 255, 255)
    screen = Image.new("RGB", (sw, sh), bg)
    d = ImageDraw.Draw(screen)
    if rng.random() < 0.5:  # a faint doodle wallpaper
        for _ in range(80):
            x, y = int(rng.integers(0, sw)), int(rng.integers(0, sh))
            c = tuple(min(255, max(0, v + int(rng.integers(-12, 12)))) for v in bg)
            d.ellipse((x, y, x + 24, y + 24), outline=c, width=2)
    header = (31, 44, 52) if dark else (0, 128, 105)
    d.rectangle((0, 0, sw, 150), fill=header)
    d.text(
        (28, 14),
        f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
        fill=(255, 255, 255),
        font=_font(26),
    )
    d.ellipse((80, 70, 140, 130), fill=_colour(rng))
    d.text((160, 82), _phrase(rng, 2), fill=(255, 255, 255), font=_font(28))
    y = 180
    for _ in range(int(rng.integers(1, 4))):
        bw = int(rng.integers(200, 520))
        d.rounded_rectangle((24, y, 24 + bw, y + 70), radius=16, fill=other_bubble)
        d.text((44, y + 20), _phrase(rng, 4)[:40], fill=fg, font=_font(24))
        y += 90
    pw = round(sw * rng.uniform(0.6, 0.8))
    photo = im.resize((pw, round(im.height * pw / im.width)), Image.Resampling.BICUBIC)
    pad = 8
    bx1 = sw - 24
    bx0 = bx1 - pw - 2 * pad
    avail = sh - 140 - y - 60
    if photo.height > avail:
        photo = _fit(photo, pw, avail)
        bx0 = bx1 - photo.width - 2 * pad
    d.rounded_rectangle((bx0, y, bx1, y + photo.height + 2 * pad + 36), radius=18, fill=bubble)
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        (0, 0, photo.width - 1, photo.height - 1), radius=14, fill=255
    )
    screen.paste(photo, (bx0 + pad, y + pad), mask)
    d.text(
        (bx1 - 90, y + photo.height + pad + 6),
        f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
        fill=fg,
        font=_font(20),
    )
    d.rectangle((0, sh - 110, sw, sh), fill=bg)
    d.rounded_rectangle((16, sh - 100, sw - 110, sh - 30), radius=35, fill=other_bubble)
    d.text((48, sh - 80), "Message", fill=(140, 140, 140), font=_font(26))
    d.ellipse((sw - 95, sh - 100, sw - 25, sh - 30), fill=header)
    if rng.random() < 0.5:
        return _encode(screen, "PNG")
    return _jpeg(screen, 90)


# --- H: picture in picture (issue 14) -------------------------------------------------------


def _pasted(frame: str, second: bool = False) -> EditFn:
    """The photo scaled to 40-80% of the frame (its longer side against the background's) and
    pasted at a random place over another photo: as is, with a white frame, or with a drop
    shadow; ``second`` pastes a further unrelated photo beside it (a loose collage)."""

    def fn(im: Image.Image, rng: np.random.Generator, others: Others) -> bytes:
        picks = rng.choice(len(others), size=2, replace=False)
        background = others[int(picks[0])].copy()
        bw, bh = background.size
        f = float(rng.uniform(0.4, 0.8))
        s = f * min(bw / im.width, bh / im.height)
        photo = im.resize(
            (max(8, round(im.width * s)), max(8, round(im.height * s))), Image.Resampling.BICUBIC
        )
        if frame == "white":
            photo = ImageOps.expand(
                photo, border=max(2, round(photo.width * 0.03)), fill=(255, 255, 255)
            )
        x = int(rng.integers(0, max(1, bw - photo.width + 1)))
        y = int(rng.integers(0, max(1, bh - photo.height + 1)))
        if second:
            extra = others[int(picks[1])]
            es = float(rng.uniform(0.3, 0.5)) * min(bw / extra.width, bh / extra.height)
            extra = extra.resize(
                (max(8, round(extra.width * es)), max(8, round(extra.height * es)))
            )
            # In the corner farthest from our photo, overlapping it at most a little.
            ex = 0 if x + photo.width / 2 > bw / 2 else bw - extra.width
            ey = 0 if y + photo.height / 2 > bh / 2 else bh - extra.height
            background.paste(extra, (ex, ey))
        if frame == "shadow":
            shadow = Image.new("L", background.size, 0)
            off = max(2, round(photo.width * 0.02))
            ImageDraw.Draw(shadow).rectangle(
                (x + off, y + off, x + photo.width + off, y + photo.height + off), fill=160
            )
            shadow = shadow.filter(ImageFilter.GaussianBlur(off))
            background.paste(Image.new("RGB", background.size, (0, 0, 0)), (0, 0), shadow)
        background.paste(photo, (x, y))
        return _jpeg(background)

    return fn


EDITS: tuple[Edit, ...] = (
    Edit("jpeg_q20", "A", _jpeg_q(20)),
    Edit("jpeg_q35", "A", _jpeg_q(35)),
    Edit("jpeg_q50", "A", _jpeg_q(50)),
    Edit("webp_q50", "A", _webp),
    Edit("resize_0.25x", "A", _resize(0.25)),
    Edit("resize_0.5x", "A", _resize(0.5)),
    Edit("resize_2x", "A", _resize(2.0)),
    Edit("greyscale", "A", _greyscale),
    Edit("brighter_1.4", "A", _enhance(ImageEnhance.Brightness, 1.4)),
    Edit("darker_0.6", "A", _enhance(ImageEnhance.Brightness, 0.6)),
    Edit("contrast_1.5", "A", _enhance(ImageEnhance.Contrast, 1.5)),
    Edit("contrast_0.6", "A", _enhance(ImageEnhance.Contrast, 0.6)),
    Edit("saturation_2", "A", _enhance(ImageEnhance.Color, 2.0)),
    Edit("blur_r2", "A", _blur),
    Edit("sharpen", "A", _sharpen),
    Edit("noise_s12", "A", _noise),
    Edit("mirror", "B", _transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    Edit("flip_v", "B", _transpose(Image.Transpose.FLIP_TOP_BOTTOM)),
    Edit("rot90", "B", _transpose(Image.Transpose.ROTATE_90)),
    Edit("rot180", "B", _transpose(Image.Transpose.ROTATE_180)),
    Edit("rot270", "B", _transpose(Image.Transpose.ROTATE_270)),
    Edit("mirror_jpeg_q40", "B", _transpose(Image.Transpose.FLIP_LEFT_RIGHT, 40)),
    Edit("rot90_half_jpeg_q50", "B", _transpose(Image.Transpose.ROTATE_90, 50, 0.5)),
    Edit("letterbox_9x16", "C", _letterbox),
    Edit("pillarbox_16x9", "C", _pillarbox),
    Edit("border_4-12%", "C", _border),
    Edit("square_pad_white", "C", _square_pad),
    Edit("square_pad_blur", "C", _square_blur_pad),
    Edit("phone_screenshot", "C", _screenshot),
    Edit("crop_5%_centred", "D", _crop(0.05, True)),
    Edit("crop_10%_centred", "D", _crop(0.10, True)),
    Edit("crop_20%_centred", "D", _crop(0.20, True)),
    Edit("crop_5%_offset", "D", _crop(0.05, False)),
    Edit("crop_10%_offset", "D", _crop(0.10, False)),
    Edit("crop_20%_offset", "D", _crop(0.20, False)),
    Edit("crop_5-20%_centred", "D", _crop_random(0.05, 0.20, True)),
    Edit("crop_5-20%_offset", "D", _crop_random(0.05, 0.20, False)),
    Edit("mirror_crop_5-15%", "D", _mirror_crop(0.05, 0.15)),
    Edit("rotate_2deg", "D", _rotate(2, False)),
    Edit("rotate_5deg", "D", _rotate(5, False)),
    Edit("rotate_3deg_crop", "D", _rotate(3, True)),
    Edit("caption_top", "E", _caption("top")),
    Edit("caption_bottom", "E", _caption("bottom")),
    Edit("sticker", "E", _sticker),
    Edit("text", "E", _text),
    Edit("watermark", "E", _watermark),
    Edit("crop_30%_centred", "F", _crop(0.30, True)),
    Edit("crop_30%_offset", "F", _crop(0.30, False)),
    Edit("collage_2x2", "F", _collage(False)),
    Edit("collage_2x2_gutter", "F", _collage(True)),
    Edit("desktop_browser", "G", _desktop_browser(False)),
    Edit("desktop_browser_window", "G", _desktop_browser(True)),
    Edit("phone_landscape", "G", _phone_landscape),
    Edit("messaging", "G", _messaging),
    Edit("pasted_40-80%", "H", _pasted("none")),
    Edit("pasted_white_frame", "H", _pasted("white")),
    Edit("pasted_shadow", "H", _pasted("shadow")),
    Edit("pasted_with_another", "H", _pasted("none", second=True)),
    # Issue 14, tier D: corner-anchored crops. Appended, not placed with the other crops, so that
    # every earlier edit keeps its seed (it is derived from the edit's index) and its figures.
    Edit("crop_corner_5-10%", "D", _corner_crop(0.90, 0.95)),
    Edit("crop_corner_10-20%", "D", _corner_crop(0.80, 0.90)),
    Edit("crop_corner_5-20%_free", "D", _corner_crop(0.80, 0.95, same=False)),
)


def apply_edit(edit: Edit, image: Image.Image, seed: int, others: Others) -> bytes:
    """The file bytes of ``edit`` applied to ``image``, the same for the same ``seed``."""
    return edit.fn(image, np.random.default_rng(seed), others)
