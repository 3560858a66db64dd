"""Screenshots of every page of the web app at desktop and phone size (``make screenshots``).

Starts a real matcher server with the web app on (a throwaway bank in a temporary folder),
walks each flow in headless Chromium as a person would, and writes ``docs/screenshots/
<size>-<page>.png``. The photos are from the shared test data (``MATCHER_TEST_DATA``, else
``../shared/data``).

    python -m tests.web.screenshots [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from tests.web.browser import launch_chromium
from tests.web.webapp import PHOTOS, WebServer, new_page, web_server

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MATCHER_TEST_DATA", ROOT.parent / "shared" / "data"))
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
TIMEOUT_MS = 120_000


def shoot(page: Any, out: Path, size: str, name: str, *, full_page: bool = True) -> None:
    page.wait_for_timeout(150)  # let the focus ring and fonts settle
    page.screenshot(
        path=str(out / f"{size}-{name}.png"), full_page=full_page, animations="disabled"
    )


def walk(browser: Any, server: WebServer, out: Path, size: str, photos: list[Path]) -> None:
    width, height = SIZES[size]
    context, page, _, _ = new_page(browser, server.url, width=width, height=height)
    try:
        page.goto("/")
        page.get_by_role("link", name="I am helping someone").wait_for()
        shoot(page, out, size, "01-start")

        page.get_by_role("link", name="I am helping someone").click()
        page.get_by_label("Your helpline's access key").wait_for()
        shoot(page, out, size, "02-sign-in")
        page.get_by_label("Your helpline's access key").fill(server.key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Open a new case").wait_for()
        shoot(page, out, size, "03-cases")
        page.get_by_role("button", name="Open a new case").click()
        page.get_by_role("button", name="I have written them down").wait_for()
        shoot(page, out, size, "04-new-case")
        page.get_by_role("button", name="I have written them down").click()
        page.get_by_label("A short note for these photos (optional)").fill("beach")
        page.locator("input[type=file]").set_input_files([str(p) for p in photos])
        page.locator(".photo-row.ok").nth(len(photos) - 1).wait_for(timeout=TIMEOUT_MS)
        page.locator(".status-row img").nth(len(photos) - 1).wait_for()
        shoot(page, out, size, "05-case-photos")
        page.get_by_role("button", name="Remove Photo 2: beach").click()
        page.get_by_role("dialog").wait_for()
        shoot(page, out, size, "06-confirm", full_page=False)  # what is on the screen
        page.get_by_role("button", name="Yes, remove this photo").click()
        page.get_by_role("dialog").wait_for(state="hidden")
        context.close()

        # A victim alone, on another device: self-service, then checking the case with its
        # number and secret.
        context, page, _, _ = new_page(browser, server.url, width=width, height=height)
        page.goto("/#/protect")
        page.get_by_role("heading", name="Protect my photos").wait_for()
        page.locator("input[type=file]").set_input_files([str(p) for p in photos[:2]])
        page.locator(".photo-row.ok").nth(1).wait_for(timeout=TIMEOUT_MS)
        shoot(page, out, size, "07-protect")
        page.get_by_role("button", name="Protect these photos").click()
        page.get_by_role("button", name="I have written them down").wait_for()
        shoot(page, out, size, "08-protect-secret")
        own = page.locator("[data-test=case-number]").inner_text()
        secret = page.locator("[data-test=secret]").inner_text()
        context.close()

        context, page, _, _ = new_page(browser, server.url, width=width, height=height)
        page.goto("/#/case")
        page.get_by_label("Case number").fill(own)
        page.get_by_label("Secret", exact=True).fill(secret)
        shoot(page, out, size, "09-victim-sign-in")
        page.get_by_role("button", name="See my case").click()
        page.locator("[data-test=photos-held]").wait_for()
        shoot(page, out, size, "10-victim-status")
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    photos = [DATA / p for p in PHOTOS]
    missing = [p for p in photos if not p.exists()]
    if missing:
        raise SystemExit(f"test photos not found: {missing[0]} (set MATCHER_TEST_DATA)")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    with (
        tempfile.TemporaryDirectory() as tmp,
        web_server(Path(tmp) / "data") as server,
        sync_playwright() as p,
    ):
        browser = launch_chromium(p)
        try:
            for size in SIZES:
                walk(browser, server, args.out, size, photos)
        finally:
            browser.close()
    print(f"wrote {len(list(args.out.glob('*.png')))} screenshots to {args.out}")


if __name__ == "__main__":
    main()
