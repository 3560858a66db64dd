"""Browser-made enroll views against Python-made ones, on two of the quality benchmark's photos:
a small, bounded run of ``python -m bench.browser_drift`` (whose report has the full figures).

On the same pixels the two are bit-identical (``test_hashing_node.py``); here each side decodes
the JPEG itself (Chromium's decoder, PIL's), so this catches a browser decoding differently
(colour management, chroma upsampling, orientation) or views that drift apart.
"""

from __future__ import annotations

from typing import Any

from bench.browser_drift import FAMILIES, browser_views, compare, python_views
from tests.conftest import shared_path
from tests.web.browser import StaticSite


def test_browser_views_drift_little_from_python_views(page: Any, static_site: StaticSite) -> None:
    folder = shared_path("photos", "bsds500", "val")
    paths = sorted(folder.glob("*.jpg"))[:2]
    made = browser_views(page, static_site, paths)
    table = compare(
        (views, python_views(path)) for (views, _), path in zip(made, paths, strict=True)
    )
    for family in FAMILIES:
        row = table[family]
        assert row["views"] >= 2, family
        # Measured: 0 bits on every view of the 300 photos. A few bits of decoder difference
        # would still match (31 allowed); 2 on average would mean something changed.
        assert row["mean"] <= 2 and row["max"] <= 10, (family, row)
    assert table["all PDQ views"]["lone"] <= 4, table["all PDQ views"]
