"""Helpers for the browser tests: headless Chromium through Playwright, one browser
context per person (own sessionStorage/localStorage), and a guard that fails the test
if a page makes a request anywhere but the system under test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.infra import CHROMIUM_NAMES, ROOT, find_chromium, scaled, tool_missing

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots go to test-results/ (ignored by git) unless asked for elsewhere:
# CODEROOM_SCREENSHOTS_DIR=docs/screenshots refreshes the ones the docs show.
SCREENSHOTS = ROOT / (os.environ.get("CODEROOM_SCREENSHOTS_DIR") or "test-results/screenshots")
LAPTOP = {"width": 1180, "height": 780}
PHONE = {"width": 390, "height": 844}


_EDITOR_TEXT = """() => Array.from(document.querySelectorAll('#editor .cm-line')).map((line) => {
  const copy = line.cloneNode(true);
  copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer').forEach((e) => e.remove());
  return copy.textContent;
}).join('\\n')"""


def ms(seconds: float) -> float:
    """A Playwright timeout (milliseconds), scaled by CODEROOM_TIME_FACTOR."""
    return scaled(seconds) * 1000


@dataclass
class Person:
    """One person in one browser context, with what their pages did wrong."""

    page: Any
    context: Any
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    @property
    def editor(self) -> Any:
        return self.page.locator("#editor .cm-content")

    def text(self) -> str:
        """The editor's text as shown (remote carets and their name labels left out)."""
        return str(self.page.evaluate(_EDITOR_TEXT))


class People:
    """Opens pages on the system under test; closes them all at the end."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.host = urlsplit(base_url).hostname
        self.people: list[Person] = []

    def open(self, path: str, viewport: dict[str, int] | None = None) -> Person:
        context = self.browser.new_context(viewport=viewport or LAPTOP, base_url=self.base_url)
        context.set_default_timeout(ms(10))
        page = context.new_page()
        person = Person(page, context)

        def guard(route: Any) -> None:
            url = route.request.url
            host = urlsplit(url).hostname
            if url.startswith(("data:", "blob:")) or host == self.host:
                route.continue_()
            else:
                person.foreign.append(url)
                route.abort()

        context.route("**/*", guard)
        page.on("pageerror", lambda exc: person.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: person.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        page.goto(path)
        self.people.append(person)
        return person

    def close(self) -> None:
        for person in self.people:
            try:
                person.context.close()
            except Exception:  # the browser may already be gone
                pass

    def check(self) -> None:
        for person in self.people:
            assert not person.foreign, f"external requests: {person.foreign}"
            assert not person.errors, f"uncaught page errors: {person.errors}"
            csp = [e for e in person.console_errors if "Content Security Policy" in e]
            assert not csp, f"CSP violations: {csp}"


def launch_browser() -> Iterator[Any]:
    chromium = find_chromium()
    if chromium is None:
        tool_missing(f"no Chromium ({', '.join(CHROMIUM_NAMES)}; apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="initial")
    return path
