"""How to run the HTTP side of ``matcher serve`` (no aiohttp import: the gRPC server's
configuration holds one of these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["WEB_ROOT", "HttpConfig"]

WEB_ROOT = Path(__file__).resolve().parent.parent / "web" / "static"
"""The web app's files (package data), served at ``/``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpConfig:
    """The HTTP/JSON API and the web app (``matcher serve --http-address``)."""

    address: str = "127.0.0.1:8080"
    """``host:port``; port 0 picks a free one (``Server.http_port`` says which)."""
    self_service_org_id: int | None = None
    """Victims may open a case themselves, owned by this organisation (None: off, and
    ``POST /api/v1/victim/cases`` answers 404)."""
    self_service_cases: int = 3
    """Cases one client address may open by self-service..."""
    self_service_window_seconds: float = 3600.0
    """...per this many seconds (a token bucket: the allowance refills over the window)."""
    self_service_overall: int = 500
    """Cases all addresses together may open by self-service per window (a flood from many
    addresses is slowed too)."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body: JSON hex is about twice the protobuf bytes of gRPC's 8 MB."""
    call_timeout_seconds: float = 30.0
    """The deadline of the gateway's gRPC calls (``Match`` requires one)."""
    web_root: Path = WEB_ROOT
    """The folder served at ``/``."""
