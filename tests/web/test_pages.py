"""The web app's files as files: what the Content-Security-Policy would refuse in a browser
(inline scripts and styles, other origins) and what the privacy model forbids (storage that
outlives the tab, markup built from strings) is caught here, without a browser.
The pages' behaviour is ``test_webapp.py``'s, in real Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "matcher" / "web" / "static"
APP = STATIC / "app"
SOURCES = sorted(APP.glob("*.js")) + sorted(APP.glob("*.css"))


class Page(HTMLParser):
    """Collects what the CSP cares about in one HTML file."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.references: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "style":
            self.problems.append("a <style> element")
        for name, value in attrs:
            if name == "style":
                self.problems.append(f"a style attribute on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"an inline handler {name} on <{tag}>")
            if name in ("src", "href", "action") and value is not None:
                self.references.append(value)
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("a <script> without src")
            self.scripts.append(names.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("an inline script")


def test_the_page_has_no_inline_script_or_style_and_refers_only_to_our_origin():
    page = Page()
    page.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    assert page.problems == []
    assert page.scripts == ["/app/main.js"]
    for ref in page.references:
        assert ref.startswith(("/", "#")) and not ref.startswith("//"), ref
        if ref.startswith("/"):
            assert (STATIC / ref.lstrip("/")).is_file(), f"{ref} is not in the web root"


FORBIDDEN = {
    r"https?://|wss?://": "a URL of another origin",
    r"\binnerHTML\b|\bouterHTML\b|insertAdjacentHTML|document\.write": "markup from a string",
    r"\beval\s*\(|new\s+Function\s*\(": "code from a string (the CSP refuses it)",
    r"localStorage\s*[.\[]|indexedDB|document\.cookie": "storage that outlives the tab",
    r"@import|url\(\s*['\"]?(?!data:)[a-z]+:": "a stylesheet or asset of another origin",
}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_sources_use_nothing_the_policy_or_the_privacy_model_forbids(path: Path):
    text = path.read_text(encoding="utf-8")
    for pattern, what in FORBIDDEN.items():
        found = re.search(pattern, text)
        assert not found, f"{path.name}: {what}: {found.group(0) if found else ''}"


def test_every_module_import_is_a_file_of_the_web_root():
    imports = re.compile(r"""^\s*import\s[^;]*?from\s+["']([^"']+)["']""", re.M)
    for path in APP.glob("*.js"):
        for spec in imports.findall(path.read_text(encoding="utf-8")):
            assert spec.startswith("./"), f"{path.name} imports {spec}: only our own modules"
            assert (APP / spec).is_file(), f"{path.name} imports {spec}, which is missing"


def test_modules_parse():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node not found (CI must check the web app's modules)")
        pytest.skip("node not found (apt-get install nodejs)")
    for path in APP.glob("*.js"):
        result = subprocess.run(
            [node, "--check", "--input-type=module"],
            input=path.read_text(encoding="utf-8"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
