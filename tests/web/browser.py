"""A local web server for the web root and a headless Chromium: shared by the browser tests
(``tests/web/conftest.py``) and the browser benchmarks (``bench/browser_*.py``)."""

from __future__ import annotations

import mimetypes
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, through a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
