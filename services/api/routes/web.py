"""Web UI routes (placeholder; the web-UI engineer owns this module)."""

from __future__ import annotations

from typing import Any

routes: list[Any] = []
