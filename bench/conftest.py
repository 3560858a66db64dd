"""Benchmark helpers: where the shared data is, result tables, and their printing at the end.

Each benchmark measures a baseline and our code in the same run and reports the ratio; absolute
numbers move with the machine's load, ratios much less. Tables go to ``bench/results/*.md``
(through ``report`` or written directly) and the ones written by this run are printed at the end
of ``make bench``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"

_tables: dict[str, list[str]] = defaultdict(list)
_started = time.time()


def data_path(*parts: str) -> Path:
    """A path under the shared data, or skip the benchmark where it is absent."""
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{table}.md").write_text("\n".join(_tables[table]) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Only tables this run wrote: an older file from another run would read as today's figure.
    for path in sorted(RESULTS.glob("*.md")):
        if path.stat().st_mtime >= _started:
            terminalreporter.section(f"bench/results/{path.name}")
            terminalreporter.write(path.read_text())
