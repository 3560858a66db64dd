"""Print the benchmark tables written under bench/results/ at the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

RESULTS = Path(__file__).parent / "results"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for path in sorted(RESULTS.glob("*.md")):
        terminalreporter.section(f"bench/results/{path.name}")
        terminalreporter.write(path.read_text())
