"""Hashing CPU per image of the view profiles at 0.15, 1 and 12 megapixels (issue 14).

``python -m bench.quality.cost [--ref REV] [--photo PATH]``: one photo (by default the largest of
the second photo set's sources if given, else scikit-image's astronaut upscaled) is resized to each
size and saved as a JPEG of quality 90; each file is then decoded and hashed as the client does
(``decode_image``, then the profile), in this one process, and the CPU seconds (``process_time``)
per image are reported: the median of ``--repeat`` runs. ``--ref REV`` measures the profiles of
``matcher/hashing/views.py`` at a git revision instead (the "before" figures), with everything
else of this checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from matcher.hashing import decode_image, pdq

SIZES = (0.15, 1.0, 12.0)
ROOT = Path(__file__).resolve().parents[2]


def _views_at(ref: str | None) -> ModuleType:
    if ref is None:
        from matcher.hashing import views

        return views
    source = subprocess.run(
        ["git", "show", f"{ref}:matcher/hashing/views.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "views_at_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("views_at_ref", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _photo(path: Path | None) -> Image.Image:
    if path is not None:
        return Image.open(path).convert("RGB")
    from skimage import data

    return Image.fromarray(np.asarray(data.astronaut()))


def _jpeg_at(image: Image.Image, megapixels: float) -> bytes:
    s = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    resized = image.resize(
        (round(image.width * s), round(image.height * s)), Image.Resampling.LANCZOS
    )
    buf = io.BytesIO()
    resized.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _cpu(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.cost", description=__doc__)
    parser.add_argument("--ref", help="git revision of views.py to measure (default: this one)")
    parser.add_argument("--photo", type=Path, help="source photo (default: astronaut)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    views = _views_at(args.ref)
    image = _photo(args.photo)
    print(f"views.py at {args.ref or 'this checkout'}; photo {args.photo or 'astronaut'}")
    print("| size | decode s | plain PDQ s | enroll s (hashes) | query s (hashes) |")
    print("|---|---:|---:|---:|---:|")
    for mp in SIZES:
        data = _jpeg_at(image, mp)
        decoded = decode_image(data)
        enrolled = views.enroll_views(decoded)
        queried = views.query_views(decoded)
        dec = _cpu(lambda: decode_image(data), args.repeat)  # noqa: B023
        plain = _cpu(lambda: pdq(decode_image(data)), args.repeat)  # noqa: B023
        enroll = _cpu(lambda: views.enroll_views(decode_image(data)), args.repeat)  # noqa: B023
        query = _cpu(lambda: views.query_views(decode_image(data)), args.repeat)  # noqa: B023
        print(
            f"| {mp:g} MP ({decoded.width}x{decoded.height} decoded) | {dec:.3f} | {plain:.3f} | "
            f"{enroll:.3f} ({len(enrolled)}) | {query:.3f} ({len(queried)}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
