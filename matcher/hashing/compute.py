"""Compute signals from a decoded picture or from file bytes. Pure functions: input in, hashes out.

PDQ comes from ``pdqhash`` (bindings to Meta's reference C++), pHash from ``imagehash``, the
exact digests from ``hashlib``.
"""

from __future__ import annotations

import hashlib

import imagehash
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


def phash(image: Image.Image) -> Hash:
    """64-bit DCT perceptual hash (``imagehash.phash``) of an image."""
    bits = imagehash.phash(image).hash.flatten()
    return Hash(PHASH, np.packbits(bits.astype(np.uint8)).tobytes())


def digests(data: bytes) -> tuple[Hash, Hash]:
    """MD5 and SHA-256 of file bytes: exact signals, for videos and any file."""
    return (
        Hash(MD5, hashlib.md5(data, usedforsecurity=False).digest()),
        Hash(SHA256, hashlib.sha256(data).digest()),
    )
