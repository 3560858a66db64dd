"""The web app end to end, in real headless Chromium against a real matcher server (gRPC and
the HTTP API on real sockets, a real SQLite bank): every flow a person can take, each checked
on the server's side through the SDK, and every request the page and its worker made recorded
and checked: nothing but digital fingerprints and form fields is sent, and only to our origin.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from matcher.client import Client
from matcher.errors import NotFound
from matcher.hashing.views import ENROLL, view_names
from matcher.principal import Principal, Role
from matcher.records import CaseState, ItemState, NewItem
from matcher.signals import PDQ, Hash
from tests.conftest import shared_path
from tests.web.webapp import PHOTOS, Sent, WebServer, new_page, web_server

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says why, and fails in CI
    expect = None

# Hashing a photo with the enroll profile in the browser takes a moment on this loaded machine.
HASH_TIMEOUT_MS = 90_000

# -- what a request body may hold ------------------------------------------------------------

HEX_LENGTH = {"pdq": 64, "phash": 16, "md5": 32, "sha256": 64}
"""Hex digits of each signal's hash: any other hex string (a picture's bytes in hex, say) fails."""

MAX_HASHES_PER_PHOTO = len(view_names(ENROLL)) + 3
"""The enroll profile's PDQ views, plus pHash, MD5 and SHA-256: the most one photo may send."""

MAX_HASH_JSON = len(json.dumps({"signal": "sha256", "hex": "f" * 64, "quality": 100})) + 1
"""The largest hash, as JSON, with its comma."""

MAX_FORM_JSON = 1024
"""Everything else in a body: the case number, the secret, a label of at most 200 characters,
the item number, the JSON punctuation."""


def body_bound(photos: int) -> int:
    """The largest body that holds ``photos`` photos' fingerprints and the form fields: 226
    hashes of at most 112 bytes of JSON, about 25 KB a photo (measured: 23.4 KB for each photo
    of these tests). The small test photos are smaller than that (8-16 KB), so the size alone
    proves nothing: what proves no picture is sent is the check of every field (``walk``): hex
    strings of exactly a hash's length, numbers in their range, strings the person typed, and
    no other field. The bound then says no photo carries more than its fingerprints."""
    return MAX_FORM_JSON + photos * MAX_HASHES_PER_PHOTO * MAX_HASH_JSON


def check_value(key: str, value: Any, parent: dict, known: set[str]) -> None:
    """One field of a body: only these keys, and each value of the form its key says."""
    if key == "hex":
        signal = parent.get("signal")
        assert isinstance(value, str) and re.fullmatch(r"[0-9a-f]+", value), key
        assert len(value) == HEX_LENGTH[signal], (signal, len(value))
    elif key == "signal":
        assert value in HEX_LENGTH
    elif key == "kind":
        assert value in ("image", "video")
    elif key == "quality":
        assert isinstance(value, int) and 0 <= value <= 100
    elif key == "item":
        assert isinstance(value, int) and 0 < value < 10_000
    elif key in ("case_number", "secret", "label"):
        assert isinstance(value, str) and value in known, (key, "not a value the person typed")
    elif key == "decision":  # a practitioner's review of a paused photo
        assert value in ("restore", "withdraw")
    elif key in ("items", "hashes"):
        assert isinstance(value, list)
    else:
        raise AssertionError(f"unexpected field {key!r} in a request body")


def walk(value: Any, known: set[str], parent: dict | None = None) -> int:
    """Check every field of a JSON body; returns how many photos (items) it carries."""
    photos = 0
    if isinstance(value, dict):
        if "hashes" in value:
            photos += 1
        for key, inner in value.items():
            check_value(key, inner, value, known)
            photos += walk(inner, known, value)
    elif isinstance(value, list):
        for inner in value:
            assert isinstance(inner, dict), "lists hold objects (items, hashes) only"
            photos += walk(inner, known, parent)
    return photos


def fingerprints_of(files: Sequence[Path]) -> list[bytes]:
    """Pieces of each photo's bytes, raw, in base64 and in hex: none may appear in a body."""
    pieces = [b"\xff\xd8\xff", b"JFIF", b"Exif", b"/9j/"]  # JPEG's magic, raw and in base64
    for path in files:
        data = path.read_bytes()
        for where in (len(data) // 4, len(data) // 2, 3 * len(data) // 4):
            start = where - where % 3  # aligned, so its base64 is a substring of the file's
            window = data[start : start + 48]
            pieces += [window, base64.b64encode(window), base64.urlsafe_b64encode(window)]
            pieces.append(window.hex().encode())
    return pieces


def check_requests(sent: list[Sent], base_url: str, files: Sequence[Path], known: set[str]) -> int:
    """Every request went to our origin, and every body is JSON of fingerprints and form
    fields within the bound; returns how many requests carried a body."""
    ours = urlsplit(base_url)
    pieces = fingerprints_of(files)
    bodies = 0
    assert sent, "the recorder saw no request"
    for request in sent:
        url = request.url[len("blob:") :] if request.url.startswith("blob:") else request.url
        where = urlsplit(url)
        assert (where.scheme, where.netloc) == (ours.scheme, ours.netloc), request.url
        for secret in known:
            if len(secret) >= 8 and request.path.startswith("/api/v1/victim"):
                assert secret not in request.url, "a victim's number or secret in a URL"
        if not request.body:
            continue
        bodies += 1
        assert request.method == "POST" and request.path.startswith("/api/v1/"), request.url
        for piece in pieces:
            assert piece not in request.body, f"image bytes in the body of {request.path}"
        try:
            body = request.json()
        except ValueError as exc:  # not JSON (UnicodeDecodeError is a ValueError too)
            raise AssertionError(f"a body that is not JSON sent to {request.path}") from exc
        photos = walk(body, known)
        assert len(request.body) <= body_bound(photos), (request.path, len(request.body))
    return bodies


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with web_server(tmp_path_factory.mktemp("webapp") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return [shared_path(p) for p in PHOTOS]


@pytest.fixture
def app(browser: Any, server: WebServer) -> Iterator[tuple[Any, Any, list[str]]]:
    """A fresh context's page on the server's web app, its request recorder, its problems."""
    context, page, recorder, problems = new_page(browser, server.url)
    try:
        yield page, recorder, problems
    finally:
        context.close()


def grpc(server: WebServer, key: str | None = None) -> Client:
    return Client(server.grpc_target, key or server.key)


def sign_in(page: Any, key: str) -> None:
    page.goto("/")
    page.get_by_role("link", name="I am helping someone").click()
    page.get_by_label("Your helpline's access key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Cases")).to_be_visible()


def confirm(page: Any, yes: str) -> None:
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=yes).click()
    expect(dialog).to_be_hidden()


PLAIN = re.compile(r"\b(hash(es)?|pdq|items?|api|json|http)\b", re.IGNORECASE)


def check_plain(page: Any) -> None:
    """The words an engineer uses are not in what the person reads."""
    text = page.locator("body").inner_text()
    found = PLAIN.findall(text)
    assert not found, f"engineer's words on the page: {found}"


# -- the flows -------------------------------------------------------------------------------


def test_practitioner_opens_a_case_adds_photos_and_withdraws(server, app, photos):
    page, recorder, problems = app
    sign_in(page, server.key)
    # The key is kept for the tab only.
    assert page.evaluate("sessionStorage.getItem('matcher.apiKey')") == server.key
    assert page.evaluate("localStorage.length") == 0
    expect(page.locator("#who")).to_have_text(re.compile("Signed in: Helpline A"))

    page.get_by_role("button", name="Open a new case").click()
    expect(page.get_by_role("heading", name="Write this down now")).to_be_visible()
    number = page.locator("[data-test=case-number]").inner_text()
    secret = page.locator("[data-test=secret]").inner_text()
    check_plain(page)
    page.get_by_role("button", name="I have written them down").click()
    expect(page.locator("[data-test=secret]")).to_have_count(0)

    page.get_by_label("A short note for these photos (optional)").fill("beach")
    page.locator("input[type=file]").set_input_files([str(p) for p in photos])
    # A note typed while they are being worked on is for the next photos, not these.
    page.get_by_label("A short note for these photos (optional)").fill("later")
    expect(page.locator(".photo-row.ok")).to_have_count(len(photos), timeout=HASH_TIMEOUT_MS)
    expect(page.locator("[data-test=photos-held]")).to_have_text(str(len(photos)))
    # Local thumbnails: object URLs of the person's own files.
    thumbs = page.locator(".status-row img")
    expect(thumbs).to_have_count(len(photos))
    assert all(src.startswith("blob:") for src in thumbs.evaluate_all("l => l.map(i => i.src)"))
    check_plain(page)

    with grpc(server) as c:
        held = c.get_case(number)
    assert held.item_count == len(photos)
    assert [i.label for i in held.items] == ["beach"] * len(photos)
    # Each photo went in as one item holding its many views.
    assert all(i.hash_count >= 10 and i.hashes_by_signal.get("pdq", 0) >= 8 for i in held.items)

    page.get_by_role("button", name="Remove Photo 2: beach").click()
    confirm(page, "Yes, remove this photo")
    expect(page.locator("[data-test=photos-held]")).to_have_text(str(len(photos) - 1))
    with grpc(server) as c:
        assert [i.state for i in c.get_case(number).items] == [
            ItemState.ACTIVE,
            ItemState.WITHDRAWN,
            ItemState.ACTIVE,
        ]

    # "No" keeps the case; then "yes" removes it.
    page.get_by_role("button", name="Remove the whole case").click()
    page.get_by_role("dialog").get_by_role("button", name="No, keep it").click()
    with grpc(server) as c:
        assert c.get_case(number).state == CaseState.ACTIVE
    page.get_by_role("button", name="Remove the whole case").click()
    confirm(page, "Yes, remove the case")
    expect(page.get_by_text("This case has been removed")).to_be_visible()
    with grpc(server) as c:
        gone = c.get_case(number)
    assert gone.state == CaseState.WITHDRAWN and gone.hash_count == 0

    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.getItem('matcher.apiKey')") is None

    paths = [r.path for r in recorder.sent]
    # The worker's own imports are recorded too: requests made inside the worker are seen.
    assert {"/hashing/worker.js", "/hashing/pdq.js"} <= set(paths), paths
    bodies = check_requests(recorder.sent, server.url, photos, {number, secret, "beach", "later"})
    assert bodies >= len(photos) + 3  # one enrollment per photo, the case, two withdrawals
    assert not problems, problems


def enrolled_case(server: WebServer, rng: np.random.Generator, n: int) -> tuple[str, str, Hash]:
    """A case of ``n`` photos made by a practitioner through the SDK; a partner has reported a
    copy of the first one. Returns the number, the secret and the first photo's hash."""
    hashes = [Hash(PDQ, rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), 90) for _ in range(n)]
    with grpc(server) as c:
        case = c.create_case()
        c.add_items(case.number, [NewItem([h]) for h in hashes])
    with grpc(server, server.partner_key) as partner:
        deadline = time.monotonic() + 30
        while not (found := partner.match([[hashes[0]]])[0].matches):
            assert time.monotonic() < deadline, "the enrolled photo never became matchable"
            time.sleep(0.1)
        partner.report(found[0].item_id, True)
    return case.number, case.secret, hashes[0]


def test_victim_sees_the_status_and_withdraws(server, app):
    page, recorder, problems = app
    number, secret, _ = enrolled_case(server, np.random.default_rng(13), 3)

    page.goto("/")
    page.get_by_role("link", name="I have a case number").click()
    page.get_by_label("Case number").fill(number)
    page.get_by_label("Secret", exact=True).fill("WRONG-" + secret)
    page.get_by_role("button", name="See my case").click()
    expect(page.get_by_role("alert").filter(has_text="do not match a case")).to_be_visible()

    page.get_by_label("Secret", exact=True).fill(secret)
    page.get_by_role("button", name="See my case").click()
    expect(page.locator("[data-test=photos-held]")).to_have_text("3")
    expect(page.locator("[data-test=matches]")).to_have_text("1")
    check_plain(page)

    page.get_by_role("button", name="Remove Photo 1").click()
    confirm(page, "Yes, remove this photo")
    expect(page.locator("[data-test=photos-held]")).to_have_text("2")
    with grpc(server) as c:
        assert c.get_case(number).items[0].state == ItemState.WITHDRAWN

    page.get_by_role("button", name="Remove my whole case").click()
    confirm(page, "Yes, remove my case")
    expect(page.get_by_text("This case has been removed")).to_be_visible()
    with grpc(server) as c:
        assert c.get_case(number).state == CaseState.WITHDRAWN

    check_requests(recorder.sent, server.url, [], {number, secret, "WRONG-" + secret})
    assert not problems, problems


def test_a_paused_photo_is_shown_then_restored_by_review(server, app):
    """Two partners report a photo wrong: it is paused (quarantined); the victim's page says so
    in words, the practitioner's "To review" lists it, and Restore (confirmed) protects it
    again, on the server as on the page."""
    page, recorder, problems = app
    number, secret, first = enrolled_case(server, np.random.default_rng(11), 2)
    second = server.bank.accounts.create_api_key(
        "beta", Role.PARTNER, org_id=None, by=Principal.operator("tests")
    ).key
    for key in (server.partner_key, second):
        with grpc(server, key) as partner:
            [found] = partner.match([[first]])[0].matches
            partner.report(found.item_id, False)
    with grpc(server, server.partner_key) as partner:
        assert not partner.match([[first]])[0].matches  # paused: it matches nothing

    page.goto("/")
    page.get_by_role("link", name="I have a case number").click()
    page.get_by_label("Case number").fill(number)
    page.get_by_label("Secret", exact=True).fill(secret)
    page.get_by_role("button", name="See my case").click()
    paused = page.locator("[data-test=paused]")
    expect(paused).to_have_count(1)
    expect(paused).to_contain_text(
        "Paused: other services said this may not be your photo; your helpline will check it."
    )
    check_plain(page)

    sign_in(page, server.key)
    review = page.get_by_role("region", name="To review")
    expect(review).to_be_visible()
    expect(review).to_contain_text(f"Photo 1 of case {number}")
    check_plain(page)
    name = f"Restore Photo 1 of case {number}"
    page.get_by_role("button", name=name).click()  # "no" first: nothing changes
    page.get_by_role("dialog").get_by_role("button", name="No, keep it").click()
    with grpc(server) as c:
        assert c.get_case(number).items[0].quarantine is not None
    page.get_by_role("button", name=name).click()
    confirm(page, "Yes, restore this photo")
    expect(page.get_by_role("region", name="To review")).to_have_count(0)
    with grpc(server) as c:
        restored = c.get_case(number).items[0]
    assert restored.quarantine is None and restored.reviewed_at is not None
    with grpc(server, server.partner_key) as partner:
        assert partner.match([[first]])[0].matches  # protected again

    page.get_by_role("button", name="Show this case").wait_for()
    page.get_by_label("Case number").fill(number)
    page.get_by_role("button", name="Show this case").click()
    expect(page.locator("[data-test=photos-held]")).to_have_text("2")
    expect(page.locator("[data-test=paused]")).to_have_count(0)
    check_requests(recorder.sent, server.url, [], {number, secret})
    assert not problems, problems


def drop(page: Any, path: Path) -> None:
    """Drop ``path`` onto the page's drop zone, as a file dragged from the desktop."""
    transfer = page.evaluate_handle(
        """([name, b64]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
          return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )
    page.dispatch_event(".drop-zone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event(".drop-zone", "drop", {"dataTransfer": transfer})


def test_self_service_protects_photos(server, app, photos):
    page, recorder, problems = app
    page.goto("/")
    page.get_by_role("link", name="Protect my photos").click()
    check_plain(page)
    chosen = photos[:2]
    # One photo from the file picker, one dropped onto the box (as from a file manager).
    page.locator("input[type=file]").set_input_files(str(chosen[0]))
    drop(page, chosen[1])
    expect(page.locator(".photo-row.ok")).to_have_count(len(chosen), timeout=HASH_TIMEOUT_MS)
    page.get_by_role("button", name="Protect these photos").click()
    expect(page.get_by_role("heading", name="Write this down now")).to_be_visible()
    number = page.locator("[data-test=case-number]").inner_text()
    secret = page.locator("[data-test=secret]").inner_text()
    page.get_by_role("button", name="I have written them down").click()
    expect(page.locator("[data-test=photos-held]")).to_have_text(str(len(chosen)))
    expect(page.locator(".status-row img")).to_have_count(len(chosen))

    # The case is real, owned by the self-service organisation, holding the photos' views.
    with grpc(server) as c, pytest.raises(NotFound):  # Helpline A's key: not its case
        c.get_case(number)
    with Client(server.grpc_target) as anyone:
        held = anyone.get_case_with_secret(number, secret)
    assert held.item_count == len(chosen)
    assert all(i.hashes_by_signal.get("pdq", 0) >= 8 for i in held.items)

    check_requests(recorder.sent, server.url, chosen, {number, secret})
    assert not problems, problems


def test_self_service_door_is_shown_only_when_on(browser, tmp_path):
    with web_server(tmp_path / "data", self_service=False) as off:
        context, page, _, problems = new_page(browser, off.url)
        try:
            page.goto("/")
            expect(page.get_by_role("link", name="I have a case number")).to_be_visible()
            expect(page.get_by_role("link", name="Protect my photos")).to_have_count(0)
            page.goto("/#/protect")  # typed by hand: the start page, not a broken form
            expect(page.get_by_role("link", name="I am helping someone")).to_be_visible()
            assert not problems, problems
        finally:
            context.close()


# -- accessibility ---------------------------------------------------------------------------

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => !el.closest('[hidden]') && el.type !== 'hidden')
  .filter(el => {
    const name = (el.labels && [...el.labels].map(l => l.textContent).join(' ').trim())
      || el.getAttribute('aria-label') || (el.tagName === 'BUTTON' && el.textContent.trim());
    return !name;
  })
  .map(el => el.outerHTML.slice(0, 120))"""


POSITIVE_TABINDEX = """() => [...document.querySelectorAll('[tabindex]')]
  .filter(el => el.tabIndex > 0).length"""


def tab_through(page: Any, presses: int, key: str = "Tab") -> list[str]:
    """What Tab (or Shift+Tab) reaches from where focus is, in order: each focused element's
    label or text. Each view puts focus on its heading, so Tab starts from there."""
    reached = []
    for _ in range(presses):
        page.keyboard.press(key)
        reached.append(
            page.evaluate(
                """() => { const el = document.activeElement;
                  const text = el.labels && el.labels[0] ? el.labels[0].textContent
                    : el.getAttribute('aria-label') || el.textContent;
                  return text.trim().slice(0, 40); }"""
            )
        )
    return reached


NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


def test_every_control_is_labelled_and_reachable_by_keyboard(server, app):
    page, _, problems = app
    page.set_viewport_size({"width": 360, "height": 740})  # a small phone
    page.goto("/")
    for route in ("#/", "#/helper", "#/case", "#/protect"):
        page.goto("/" + route)
        page.wait_for_selector("h1")
        assert page.evaluate(NO_SIDEWAYS_SCROLL), f"{route} is wider than a 360 px screen"
        assert page.evaluate(UNLABELLED) == [], route
        assert page.evaluate(POSITIVE_TABINDEX) == 0, "tab order must follow the page's order"
        check_plain(page)

    page.goto("/#/")
    page.wait_for_selector("h1")
    assert page.evaluate("document.activeElement.tagName") == "H1"
    reached = tab_through(page, 5)
    titles = ("Protect my photos", "I have a case number", "I am helping someone")
    doors = [t for r in reached for t in titles if r.startswith(t)]
    assert doors == list(titles)
    page.get_by_role("heading", level=1).focus()
    assert tab_through(page, 2, "Shift+Tab") == ["Photo protection", "Skip to the main content"]

    # Keyboard only: the victim's form, from the door to the answer.
    page.goto("/#/case")
    page.wait_for_selector("h1")
    reached = tab_through(page, 6)
    assert reached.index("Case number") < reached.index("Secret") < reached.index("See my case")
    page.get_by_label("Case number").focus()
    page.keyboard.type("AAAA-BBBB-CCCC")
    page.keyboard.press("Tab")
    page.keyboard.type("not-the-secret")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert").filter(has_text="do not match a case")).to_be_visible()

    # The confirmation traps focus and Escape means no.
    number, secret, _ = enrolled_case(server, np.random.default_rng(7), 1)
    page.get_by_label("Case number").fill(number)
    page.get_by_label("Secret", exact=True).fill(secret)
    page.keyboard.press("Enter")
    expect(page.locator("[data-test=photos-held]")).to_have_text("1")
    assert page.evaluate(NO_SIDEWAYS_SCROLL), "the case status is wider than a 360 px screen"
    assert page.evaluate(UNLABELLED) == []
    page.get_by_role("button", name="Remove my whole case").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    assert page.evaluate("document.activeElement.textContent") == "No, keep it"
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert page.evaluate("document.activeElement.textContent") == "Remove my whole case"
    with grpc(server) as c:
        assert c.get_case(number).state == CaseState.ACTIVE
    assert not problems, problems


# -- the request checker itself: it must refuse what it is there to catch ---------------------


def _enroll(items: list[dict]) -> Sent:
    body = json.dumps({"items": items}, separators=(",", ":")).encode()
    return Sent("POST", "http://127.0.0.1:9/api/v1/cases/K7QP-2MXR-9TDA/items", body, "fetch")


def _photo(n: int = 40) -> dict:
    hashes: list[dict] = [{"signal": "pdq", "hex": f"{i:064x}", "quality": 90} for i in range(n)]
    hashes.append({"signal": "md5", "hex": "a" * 32})
    return {"kind": "image", "label": "beach", "hashes": hashes}


def test_the_request_checker_refuses_what_it_is_there_to_catch(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(bytes(range(256)) * 40)
    data = photo.read_bytes()
    base = "http://127.0.0.1:9/"
    known = {"beach", "K7QP-2MXR-9TDA", "S3CR-ET00"}
    assert check_requests([_enroll([_photo()])], base, [photo], known) == 1

    def refused(sent: Sent) -> None:
        with pytest.raises(AssertionError):
            check_requests([sent], base, [photo], known)

    refused(_enroll([{**_photo(), "thumbnail": "x"}]))  # a field that is not a form field
    refused(_enroll([{**_photo(), "label": "IMG_2041.jpg"}]))  # a value nobody typed
    refused(_enroll([{"kind": "image", "hashes": [{"signal": "pdq", "hex": data[:64].hex()}]}]))
    refused(_enroll([{"kind": "image", "hashes": [{"signal": "md5", "hex": "A" * 32}]}]))
    refused(_enroll([_photo(MAX_HASHES_PER_PHOTO + 50)]))  # more than one photo's worth
    refused(Sent("POST", base + "api/v1/victim/status", data, "fetch"))
    json_then_bytes = b'{"secret": "S3CR-ET00"} ' + data
    refused(Sent("POST", base + "api/v1/victim/status", json_then_bytes, "fetch"))
    refused(Sent("POST", base + "api/v1/victim/status", base64.b64encode(data), "fetch"))
    refused(Sent("GET", "http://127.0.0.2:9/app/main.js", None, "script"))  # another origin
    refused(Sent("GET", base + "api/v1/victim/status?secret=S3CR-ET00", None, "fetch"))
