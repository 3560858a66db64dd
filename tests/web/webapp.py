"""A real matcher server with its HTTP API and web app on, and a page driver that records every
request the page makes: shared by the end-to-end test (``test_webapp.py``) and ``make
screenshots`` (``tests/web/screenshots.py``)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from matcher.bank import Bank
from matcher.http.config import HttpConfig
from matcher.principal import Principal, Role
from matcher.service import Server, ServerConfig

# The photos the flows add: small real photos from the shared data (hashing each in the browser
# with the enroll profile takes a moment; three are enough for every flow).
PHOTOS = (
    "photos/clothing/test-dress-06a00c0f-5f9a-410d-a7da-3881a9df3a71.jpg",
    "photos/clothing/test-dress-28b09463-6bbb-491d-9ffc-f36df5c6b211.jpg",
    "photos/clothing/test-dress-35f157d0-53e4-4496-b087-da4ad63edd47.jpg",
)


@dataclass
class WebServer:
    """A running server: its bank, its base URL, a practitioner's key."""

    bank: Bank
    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    key: str
    partner_key: str
    org_id: int
    self_service_org_id: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=0, drain=0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.bank.close()


@contextmanager
def web_server(data: Path, *, self_service: bool = True) -> Iterator[WebServer]:
    """A matcher server on free ports with the HTTP API and web app on, one helpline with a
    practitioner key, and (by default) self-service on for a second organisation."""
    bank = Bank.open(data, load=False)
    me = Principal.operator("tests")
    accounts = bank.accounts
    org = accounts.create_organisation("Helpline A", by=me).id
    own = accounts.create_organisation("Self-service", by=me).id
    key = accounts.create_api_key("a", Role.PRACTITIONER, org_id=org, by=me).key
    partner = accounts.create_api_key("acme", Role.PARTNER, org_id=None, by=me).key
    config = ServerConfig(
        address="127.0.0.1:0",
        metrics_address=None,
        http=HttpConfig(address="127.0.0.1:0", self_service_org_id=own if self_service else None),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(Server.start(bank, config), loop).result(60)
    running = WebServer(bank, server, loop, thread, key, partner, org, own)
    try:
        assert bank.wait_ready(120)
        yield running
    finally:
        running.stop()


@dataclass
class Sent:
    """One request the page (or its worker) made."""

    method: str
    url: str
    body: bytes | None
    resource: str

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def json(self) -> Any:
        assert self.body is not None
        return json.loads(self.body)


@dataclass
class Recorder:
    """Every request of a browser context, from the page and its workers alike."""

    sent: list[Sent] = field(default_factory=list)

    def attach(self, context: Any) -> None:
        context.on("request", self._on_request)

    def _on_request(self, request: Any) -> None:
        self.sent.append(
            Sent(request.method, request.url, request.post_data_buffer, request.resource_type)
        )


def new_page(browser: Any, base_url: str, *, width: int = 1280, height: int = 800) -> Any:
    """A page in a fresh context (its own sessionStorage) with a recorder on it: returns
    ``(context, page, recorder, problems)``; ``problems`` collects uncaught exceptions and CSP
    violations (Chromium reports those on the console). Failed loads are not problems: a wrong
    secret is a 404 by design, and Chromium logs it too."""
    context = browser.new_context(
        viewport={"width": width, "height": height},
        base_url=base_url,
        reduced_motion="reduce",
    )
    recorder = Recorder()
    recorder.attach(context)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text or "Refused to" in msg.text
            else None
        ),
    )
    return context, page, recorder, problems
