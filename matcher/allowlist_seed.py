"""The allowlist's seed: pictures that look alike whoever made them, and their hashes.

Perceptual hashes of featureless or purely geometric pictures collide across unrelated files: a
flat grey square, a gradient, a grid, a checkerboard or stripes hash the same whoever drew them,
so anyone can enroll one and have every partner's copies of it taken down. The bank refuses to
enroll them and suppresses matches on them (``matcher.bank.allowlist``); this module makes the
set it starts with.

What the quality floor already does, and why the seed is still needed: PDQ gives flat pictures
a low quality score, and hashes below the floor (50) are never enrolled or asked. A uniform
colour or a soft gradient is therefore enrolled by its **pHash** alone (pHash has no quality
score), and every uniform picture has the same pHash. Sharp geometric patterns (checkerboards,
grids, stripes, hard-edged gradients) have a PDQ quality of 100 and pass the floor. So the seed
holds the pHash of every pattern, and the PDQ hash of every pattern that passes the floor.

The patterns (``patterns``): uniform colours at several grey levels and hues, linear gradients
in four directions and radial ones, line grids at several pitches, checkerboards at several
square sizes, stripes (horizontal, vertical, diagonal) at several widths, each in both
polarities. Each pattern's eight quarter turns and flips are hashed from the turned pixels, and
the distinct values kept.

``seed_entries()`` reads the generated values (``matcher.bank._seed_data``, written by
``python -m matcher.allowlist_seed``), so that opening a bank hashes nothing;
``compute_entries()`` makes them again from the pictures, and a test checks that both agree.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# PIL and numpy are imported where the pictures are made: the server reads ``seed_entries``
# only, and its modules never load PIL (``tests/test_service.py``).

__all__ = ["SeedEntry", "compute_entries", "patterns", "seed_entries"]

_SIZE = 256


@dataclass(frozen=True, slots=True)
class SeedEntry:
    """One seed hash: its text form (``signal:hex``) and the pattern family it came from."""

    hash: str
    label: str


def _rgb(grey: np.ndarray, low: tuple[int, int, int], high: tuple[int, int, int]) -> Image.Image:
    # grey in [0, 1]: mix two colours.
    import numpy as np
    from PIL import Image

    a, b = np.array(low, np.float64), np.array(high, np.float64)
    pixels = a + (b - a) * grey[..., None]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def patterns() -> Iterator[tuple[str, Image.Image]]:
    """Every seed picture, with its family label (``uniform``, ``gradient``, ``grid``,
    ``checkerboard``, ``stripes``), 256x256 RGB."""
    import numpy as np
    from PIL import Image

    n = _SIZE
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    black, white = (0, 0, 0), (255, 255, 255)
    for level in (0, 32, 64, 96, 128, 160, 192, 224, 255):
        yield "uniform", Image.new("RGB", (n, n), (level, level, level))
    for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)):
        yield "uniform", Image.new("RGB", (n, n), colour)
    ramps = {
        "h": x / (n - 1),
        "d": (x + y) / (2 * (n - 1)),
        "r": np.hypot(x - n / 2, y - n / 2) / np.hypot(n / 2, n / 2),
    }
    for ramp in ramps.values():
        for low, high in ((black, white), ((0, 0, 128), (135, 206, 235)), ((64, 64, 64), white)):
            yield "gradient", _rgb(ramp, low, high)
    for pitch in (8, 16, 32, 64):
        lines = ((x % pitch) < 2) | ((y % pitch) < 2)
        yield "grid", _rgb(lines.astype(np.float64), white, black)
        yield "grid", _rgb(lines.astype(np.float64), black, white)
    for size in (4, 8, 16, 32, 64, 128):
        board = ((x // size + y // size) % 2).astype(np.float64)
        yield "checkerboard", _rgb(board, black, white)
    for width in (4, 8, 16, 32, 64):
        yield "stripes", _rgb(((x // width) % 2).astype(np.float64), black, white)
        yield "stripes", _rgb((((x + y) // width) % 2).astype(np.float64), black, white)


def compute_entries() -> list[SeedEntry]:
    """Hash every pattern and its eight turns and flips: pHash always, PDQ where it passes the
    quality floor. Distinct values only, in a stable order. Takes a few seconds."""
    from PIL import Image

    from matcher.hashing.compute import pdq, phash
    from matcher.signals import PDQ

    # The eight quarter turns and flips (None: the picture itself).
    dihedral = (
        None,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,
        Image.Transpose.FLIP_TOP_BOTTOM,
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
    )
    seen: dict[str, str] = {}
    for label, image in patterns():
        for op in dihedral:
            turned = image if op is None else image.transpose(op)
            for h in (pdq(turned), phash(turned)):
                if h.signal is PDQ and not PDQ.meets_floor(h.quality):
                    continue
                seen.setdefault(str(h), label)
    return [SeedEntry(h, label) for h, label in seen.items()]


def seed_entries() -> list[SeedEntry]:
    """The generated seed (what ``compute_entries`` gave when it was last written)."""
    from matcher.bank._seed_data import ENTRIES

    return [SeedEntry(h, label) for h, label in ENTRIES]


def _write(path: Path) -> int:
    entries = compute_entries()
    lines = [
        '"""The allowlist seed\'s hashes, generated by ``python -m matcher.allowlist_seed``:',
        "do not edit (``tests/test_allowlist.py`` checks it against the patterns).",
        "",
        "Hashes of generated geometric pictures (no person's picture): public on purpose.",
        '"""',
        "",
        "ENTRIES: tuple[tuple[str, str], ...] = (",
        *(f'    ("{e.hash}", "{e.label}"),' for e in entries),
        ")",
        "",
    ]
    path.write_text("\n".join(lines))
    return len(entries)


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    target = Path(__file__).parent / "bank" / "_seed_data.py"
    print(f"{_write(target)} entries written to {target}", file=sys.stderr)
