"""Compute signals from a decoded picture or from file bytes. Pure functions: input in, hashes out.

PDQ comes from ``pdqhash`` (bindings to Meta's reference C++), the exact digests from
``hashlib``. pHash is ``imagehash.phash``'s algorithm computed here with numpy (see ``phash``):
importing imagehash's DCT means importing scipy, which costs more CPU than hashing a photo.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pdqhash
from PIL import Image

from matcher.signals import MD5, PDQ, PHASH, SHA256, Hash

__all__ = [
    "DIHEDRAL_NAMES",
    "digests",
    "pdq",
    "pdq_dihedral",
    "phash",
]

# The order pdqhash.compute_dihedral returns its eight hashes in, named by what was done to the
# picture: rotations are counter-clockwise; flip_v swaps top and bottom, flip_h left and right;
# transpose mirrors along the main diagonal, transverse along the other one. (Checked against
# Meta's reference images reg-test-input/dih/bridge-*.jpg in the tests.)
DIHEDRAL_NAMES: tuple[str, ...] = (
    "original",
    "rot90",
    "rot180",
    "rot270",
    "flip_v",
    "flip_h",
    "transpose",
    "transverse",
)


def _pixels(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    return np.asarray(image)


def _pdq_hash(bits: np.ndarray, quality: int) -> Hash:
    return Hash(PDQ, np.packbits(bits.astype(np.uint8)).tobytes(), int(quality))


def pdq(image: Image.Image) -> Hash:
    """PDQ hash of an RGB image, with its quality score (0-100) in ``Hash.quality``."""
    bits, quality = pdqhash.compute(_pixels(image))
    return _pdq_hash(bits, quality)


def pdq_dihedral(image: Image.Image) -> dict[str, Hash]:
    """The PDQ hashes of all eight rotations and flips of an RGB image, by ``DIHEDRAL_NAMES``.

    One pass: the DCT is shared, so this costs little more than ``pdq``.
    """
    vectors, quality = pdqhash.compute_dihedral(_pixels(image))
    return {name: _pdq_hash(v, quality) for name, v in zip(DIHEDRAL_NAMES, vectors, strict=True)}


# imagehash.phash: the picture in grey, resized to 32x32 (Lanczos), a 2-D DCT-II (scipy's
# unnormalised type 2: 2 * sum x[n] cos(pi k (2n + 1) / 2N)), its top-left 8x8 coefficients, one
# bit per coefficient above their median. Only those 8 rows of the DCT are ever needed.
_PHASH_SIZE = 8
_PHASH_SCALE = 4
_N = _PHASH_SIZE * _PHASH_SCALE
_DCT = 2.0 * np.cos(
    np.pi * np.arange(_PHASH_SIZE)[:, None] * (2 * np.arange(_N)[None, :] + 1) / (2 * _N)
)


def phash(image: Image.Image) -> Hash:
    """64-bit DCT perceptual hash of an image: the same bits as ``imagehash.phash``.

    scipy's FFT-based DCT gives exact zeros where a picture's symmetry cancels a coefficient
    (flat or evenly striped pictures), a matrix product gives rounding noise of about 1e-12
    there instead; that noise is set back to zero, so that such ties with the median resolve
    as imagehash resolves them. The tests compare both on real photos and on such pictures.
    """
    grey = image.convert("L").resize((_N, _N), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    coefficients = _DCT @ pixels @ _DCT.T
    noise = 1e-12 * max(float(np.abs(coefficients).max()), 1.0)
    coefficients[np.abs(coefficients) < noise] = 0.0
    # np.median's own arithmetic (the mean of the two middle values of 64), without the import
    # of numpy.ma that np.median makes on first use (~10 ms of a one-file start-up).
    middle = np.partition(coefficients.ravel(), (31, 32))[31:33]
    median = (middle[0] + middle[1]) / 2
    bits = (coefficients > median).flatten()
    return Hash(PHASH, np.packbits(bits.astype(np.uint8)).tobytes())


def digests(data: bytes) -> tuple[Hash, Hash]:
    """MD5 and SHA-256 of file bytes: exact signals, for videos and any file."""
    return (
        Hash(MD5, hashlib.md5(data, usedforsecurity=False).digest()),
        Hash(SHA256, hashlib.sha256(data).digest()),
    )
