"""Turn image bytes into an RGB picture ready for hashing.

Decisions made once, here, for every caller:

- **Orientation**: the EXIF orientation tag is applied, so a phone photo hashes as it is shown.
- **Modes**: every PIL mode is converted to RGB with PIL's own conversion (CMYK, LAB, HSV,
  YCbCr, I;16, I, F, 1, P, PA, LA, RGBA...).
- **Alpha is ignored**: the colour channels are hashed as stored and the alpha channel is dropped.
  This is what Meta's reference hashers do (python-threatexchange's conformance images only hash
  to their published values this way), and it keeps one picture's hash independent of the page
  colour it would be shown on.
- **Animations**: the first frame.
- **HEIC/HEIF**: through ``pillow-heif``.
- **Size**: a JPEG is decoded at a reduced scale in the DCT domain (PIL's draft mode), keeping the
  short side at least ``JPEG_DRAFT_MIN_SIDE`` pixels; other formats larger than
  ``REDUCE_MIN_SIDE`` are box-reduced by a whole factor. PDQ downsamples to 64x64 anyway; decoding
  fewer pixels is where the time goes (see README, "Hashing speed", for the drift measured).
- **Bombs**: an image declaring more than ``max_pixels`` pixels is refused before it is decoded.
"""

from __future__ import annotations

import contextlib
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from matcher.errors import CorruptImage, ImageTooLarge, UnsupportedImage

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "JPEG_DRAFT_MIN_SIDE",
    "REDUCE_MIN_SIDE",
    "decode_image",
]

# The decompression-bomb guard. 150 megapixels is above any phone or DSLR photo and below what
# would need gigabytes of memory to decode in full.
DEFAULT_MAX_PIXELS = 150_000_000

# Measured on the 12 MP phone photos and 1.6 MP photos of the PDQ test set: a draft decode with the
# short side >= 384 moved PDQ by mean 2.4, max 8 bits from the full decode, well inside Meta's
# 10-bit conformance tolerance. Smaller drafts (1/8 scale of a 1-3 MP photo) move it past 30 bits.
JPEG_DRAFT_MIN_SIDE = 384

# A box reduce is a cruder low-pass than DCT scaling, so it keeps more pixels: with the short side
# >= 512 it moved PDQ by at most 4 bits on the same photos.
REDUCE_MIN_SIDE = 512

_heif_registered = False


def _register_heif() -> None:
    # Registration costs a few milliseconds and touches PIL's global plugin table: do it once,
    # lazily, so importing matcher stays cheap.
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
            pass
        else:
            register_heif_opener()
        _heif_registered = True


def _is_heif(data: bytes) -> bool:
    # HEIC/HEIF (and AVIF) are ISO media files: a first box "ftyp". Importing pillow-heif costs
    # more than hashing a small photo, so it is loaded for those files only.
    return data[4:8] == b"ftyp"


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image file bytes into an upright RGB image, reduced for hashing.

    Raises ``UnsupportedImage`` (not an image we can read), ``CorruptImage`` (truncated or
    damaged) or ``ImageTooLarge`` (more than ``max_pixels``). Never returns a partial image.
    """
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    if _is_heif(data):
        _register_heif()
    with warnings.catch_warnings():
        # Our own guard below replaces PIL's global one (whose limit the caller cannot set).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"image is larger than the pixel limit ({exc})") from None
        except UnidentifiedImageError:
            raise UnsupportedImage("not a recognised image format") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise CorruptImage(f"cannot read image header: {exc}") from None

        width, height = image.size
        if width <= 0 or height <= 0:
            raise CorruptImage("image has no pixels")
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image has {width}x{height} pixels, above the limit of {max_pixels:,}"
            )
        try:
            return _load_for_hashing(image)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"image is larger than the pixel limit ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            # PIL reports truncation and damage with a mix of exception types.
            raise CorruptImage(f"cannot decode image: {exc}") from None
        # No close(): the picture may be the image returned, and its file is an in-memory buffer.


def _load_for_hashing(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.format == "JPEG":
        # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least the
        # requested size, and decodes straight into RGB where the file is YCbCr.
        side = JPEG_DRAFT_MIN_SIDE
        image.draft("RGB", (side, side))
    image.load()
    # In place: most photos need no turn, and a copy of every picture is measurable. A damaged
    # EXIF block must not cost us the picture.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    factor = min(rgb.size) // REDUCE_MIN_SIDE
    if factor >= 2:
        rgb = rgb.reduce(factor)
    return rgb
