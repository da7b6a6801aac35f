"""The browser fixture of the browser tests: one headless Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.browser import launch_browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Playwright); missing, it skips the test, or fails it under CI."""
    yield from launch_browser()
