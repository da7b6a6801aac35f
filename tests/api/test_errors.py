"""Every error is JSON {"error": {"code", "message"}} with the right status."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/api/", 404, "not_found"),
        ("GET", "/api/code-blocks/x/y/z", 404, "not_found"),
        ("DELETE", "/api/code-blocks", 405, "method_not_allowed"),
        ("POST", "/api/rooms", 405, "method_not_allowed"),
        ("PUT", "/healthz", 405, "method_not_allowed"),
        ("POST", "/api/code-blocks/" + "a" * 24 + "/sessions", 405, "method_not_allowed"),
    ],
)
async def test_routing_errors(
    api_client: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    response = await api_client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    if status == 405:
        assert "GET" in response.headers["allow"]


async def test_head_is_get_without_body(api_client: httpx.AsyncClient) -> None:
    response = await api_client.head("/api/code-blocks")
    assert response.status_code == 200
    assert response.content == b""
