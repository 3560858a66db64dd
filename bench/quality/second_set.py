"""The second photo set (issue 14): photos nobody used to design the view profiles.

``python -m bench.quality.second_set [FOLDER]`` builds it (default ``$MATCHER_SECOND_SET`` or
``~/.cache/matcher/second-set``): the natural photographs among the wallpapers of three Debian
packages, fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no install), plus the
colour photos that scikit-image ships in its wheel. Each is scaled to fit 640x640 (the size of the
design set's photos) and saved as a JPEG of quality 92. Nothing goes into the repository.

Licences: ``mate-backgrounds`` nature photos GPL-2+ (Debian copyright file);
``plasma-workspace-wallpapers`` photos LGPL-3 (Volna: CC-BY-SA-4.0), per their metadata.json;
scikit-image's astronaut (NASA, public domain), chelsea and coffee (CC0, Stefan van der Walt and
Rachel Michetti) and rocket (public domain, SpaceX). Abstract and drawn wallpapers of the same
packages are left out: they are not photos.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTOS", "build", "default_folder"]

PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers")

# Paths inside the unpacked packages: the photographs only.
PHOTOS = (
    *(
        f"usr/share/backgrounds/mate/nature/{n}.jpg"
        for n in [
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        ]
    ),
    *(
        f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg"
        for n in [
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        ]
    ),
    "usr/share/wallpapers/Volna/contents/images/5120x2880.jpg",
)
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket")


def default_folder() -> Path:
    env = os.environ.get("MATCHER_SECOND_SET")
    return Path(env) if env else Path.home() / ".cache" / "matcher" / "second-set"


def _save(image: Image.Image, path: Path) -> None:
    image = image.convert("RGB")
    image.thumbnail((640, 640), Image.Resampling.LANCZOS)
    image.save(path, "JPEG", quality=92)


def build(folder: Path, unpacked: Path | None = None) -> int:
    """Write the set into ``folder``; ``unpacked``: packages already unpacked there."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = unpacked
        if root is None:
            root = Path(tmp) / "x"
            subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True)
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        for rel in PHOTOS:
            parts = Path(rel).parts
            name = parts[-1] if "mate" in parts else parts[3]
            _save(Image.open(root / rel), folder / f"{Path(name).stem.lower()}.jpg")
    from skimage import data

    for name in SKIMAGE:
        _save(Image.fromarray(np.asarray(getattr(data, name)())), folder / f"skimage-{name}.jpg")
    return len(list(folder.glob("*.jpg")))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else default_folder()
    src = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(f"{build(out, src)} photos in {out}")
