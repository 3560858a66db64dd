"""Fixtures for the browser tests: a real headless Chromium and a local web server.

- ``browser``: one Debian ``chromium`` for the tests of this folder, driven by Python
  playwright (its wheel carries its own driver; the browser is the system's, never
  ``playwright install``'s).
  Skipped with a reason where chromium or playwright is missing, a failure under CI (``CI``
  set), where ``.ci/run`` installs chromium and the dev extra installs playwright.
- ``page``: a fresh browser context and page per test (no state shared between tests).
- ``static_site``: the web root ``matcher/web/static`` on a free local port, served with the
  Content-Security-Policy and headers the real server sends, plus test-only routes: a blank
  page at ``/__test__/blank.html`` and files registered with ``StaticSite.share`` under
  ``/__data__/`` (pictures for the hashing tests). Nothing else is reachable.
- ``node``: the path of ``node``, for the ``node --test`` suites (same skip/fail rule).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.browser import CHROMIUM, StaticSite, launch_chromium


def missing(what: str) -> None:
    """Skip (or, under CI, fail) a test whose tool is not installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must run the browser tests: see .ci/run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def static_site() -> Iterator[StaticSite]:
    site = StaticSite()
    yield site
    site.close()


# Package scope, not session: playwright's sync API keeps an asyncio loop running in the main
# thread while it is started, and every later ``asyncio.run`` (the package's doctests, other
# tests) would fail. So the browser lives while tests/web runs, and stops before anything else.
# For the same reason a test here must not call asyncio.run in the main thread.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        missing("node not found (apt-get install nodejs)")
    assert path is not None
    return path
