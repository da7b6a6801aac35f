"""Fixtures of the browser tests: one headless Chromium per module; `people` (pages in
it) and `new_block` on the module's own `fleet` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.infra import Fleet
from tests.web.browser import People, launch_browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Playwright); missing, it skips the test, or fails it under CI."""
    yield from launch_browser()


@pytest.fixture
def people(browser: Any, fleet: Fleet) -> Iterator[People]:
    """People (pages) on the module's fleet; their page errors fail the test."""
    assert fleet.api is not None
    crowd = People(browser, fleet.api.url)
    try:
        yield crowd
        crowd.check()
    finally:
        crowd.close()


@pytest.fixture
def new_block(fleet: Fleet) -> Callable[..., dict[str, Any]]:
    """A fresh block (so each test has a room of its own)."""

    def make(**overrides: Any) -> dict[str, Any]:
        return fleet.new_block(**overrides)

    return make
