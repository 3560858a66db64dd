"""Benchmark helpers: where the shared data is, and a report written at the end of the run.

Each benchmark measures a baseline and our code in the same run and reports the ratio; absolute
numbers move with the machine's load, ratios much less. Tables go to ``bench/results/*.md`` and
are printed at the end of ``make bench``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"

_tables: dict[str, list[str]] = defaultdict(list)


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (set MATCHER_TEST_DATA)")
    return path


def median_seconds(benchmark: object) -> float:
    """The median round time pytest-benchmark measured for ``benchmark``."""
    return float(benchmark.stats.stats.median)  # type: ignore[attr-defined]


def report(table: str, header: str, row: str) -> None:
    """Add a Markdown row to ``bench/results/<table>.md`` (the header is written once)."""
    if not _tables[table]:
        _tables[table].append(header)
    _tables[table].append(row)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _tables:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, lines in _tables.items():
        text = "\n".join(lines) + "\n"
        (RESULTS / f"{name}.md").write_text(text)
        print(f"\n## {name} (bench/results/{name}.md)\n{text}")
