"""/healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import Any

import httpx

from tests.infra import free_port


async def test_healthz(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_ok(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"mongodb": "ok", "redis": "ok"}}


async def test_readyz_names_the_failed_dependency(api_client_factory: Any) -> None:
    client = await api_client_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["mongodb"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert (await client.get("/healthz")).status_code == 200


async def test_metrics_by_route_template(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for block_id in ("a" * 24, "b" * 24, "junk"):
        assert (await api_client.get(f"/api/code-blocks/{block_id}")).status_code == 404
    await api_client.get("/no/such/path/1")
    await api_client.get("/no/such/path/2")
    await api_client.get("/api/code-blocks")
    response = await api_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'coderoom_api_requests_total{method="GET",route="/api/code-blocks/{id}",status="404"} 3.0'
        in text
    )
    assert 'route="<unmatched>",status="404"} 2.0' in text
    assert (
        'coderoom_api_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/code-blocks"'
        in text
    )
    assert "aaaaaaaa" not in text and "/no/such" not in text
