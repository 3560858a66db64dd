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

from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.records import NewItem
from matcher.signals import PDQ, Hash

_OPERATOR = Principal.operator("bench")

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


def random_pdq() -> Hash:
    """A random PDQ hash of good quality (random codes: the index's worst case for locality)."""
    return Hash(PDQ, os.urandom(32), 90)


def filled_bank(where: str | Path, items: int) -> tuple[Bank, list[NewItem]]:
    """A bank at ``where`` (a folder or a store URL) holding ``items`` items of 4 random PDQ
    hashes, enrolled 500 at a time into one case, loaded and ready."""
    bank = Bank.open(str(where))
    org = bank.accounts.create_organisation("Helpline", by=_OPERATOR)
    me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
    case = bank.create_case(by=me)
    enrolled = [NewItem([random_pdq() for _ in range(4)]) for _ in range(items)]
    for start in range(0, items, 500):
        bank.enroll(case.number, enrolled[start : start + 500], by=me)
    assert bank.wait_ready(120)
    return bank, enrolled


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Only tables this run wrote: an older file from another run would read as today's figure.
    for path in sorted(RESULTS.glob("*.md")):
        if path.stat().st_mtime >= _started:
            terminalreporter.section(f"bench/results/{path.name}")
            terminalreporter.write(path.read_text())
