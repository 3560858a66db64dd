"""Fixtures for the browser tests: a real headless Chromium and a local web server.

- ``browser``: one Debian ``chromium`` for the session, driven by Python playwright (its wheel
  carries its own driver; the browser is the system's, never ``playwright install``'s).
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

import mimetypes
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "matcher" / "web" / "static"
CHROMIUM = os.environ.get("MATCHER_CHROMIUM", "/usr/bin/chromium")
# The flags of the plan: no sandbox (root in CI), no GPU, nothing talking to the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CSP = (
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; "
    "img-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
BLANK = (
    b"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>test</title></head>"
    b"<body></body></html>"
)


def missing(what: str) -> None:
    """Skip (or, under CI, fail) a test whose tool is not installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must run the browser tests: see .ci/run)")
    pytest.skip(what)


class StaticSite:
    """A running local server for the web root (see the module docstring)."""

    def __init__(self) -> None:
        self.shared: dict[str, Path] = {}
        self.requests: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append(self.path)
                path = self.path.split("?", 1)[0]
                if path == "/__test__/blank.html":
                    self._send(200, BLANK, "text/html; charset=utf-8")
                    return
                if path.startswith("/__data__/"):
                    file = site.shared.get(path[len("/__data__/") :])
                else:
                    file = (STATIC / path.lstrip("/")).resolve()
                    if STATIC.resolve() not in file.parents or not file.is_file():
                        file = None
                if file is None:
                    self._send(404, b"not found", "text/plain")
                    return
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if file.suffix in (".js", ".mjs"):
                    kind = "text/javascript; charset=utf-8"
                self._send(200, file.read_bytes(), kind)

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Security-Policy", CSP)
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def share(self, name: str, path: Path) -> str:
        """Serve ``path`` at ``/__data__/<name>``; returns that URL path."""
        self.shared[name] = path
        return f"/__data__/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def static_site() -> Iterator[StaticSite]:
    site = StaticSite()
    yield site
    site.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
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
