"""/api/config and /api/openapi.json (checked against the real routes and responses)."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
from starlette.routing import Mount, Route

from services.api.app import create_app
from tests.infra import make_block


async def test_config_default_is_same_origin(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/config")
    assert response.json()["gatewayUrls"] == []


async def test_config_lists_gateways(api_client_factory: Any) -> None:
    urls = ("ws://127.0.0.1:8001/ws/rooms", "ws://127.0.0.1:8002/ws/rooms")
    client = await api_client_factory(gateway_urls=urls)
    assert (await client.get("/api/config")).json()["gatewayUrls"] == list(urls)


async def test_config_serves_the_gateways_limits_and_heartbeat(api_client_factory: Any) -> None:
    client = await api_client_factory(
        max_frame_bytes=65536,
        max_doc_bytes=524288,
        max_updates_per_second=20.0,
        update_burst=40,
        keepalive_seconds=4.0,
    )
    body = (await client.get("/api/config")).json()
    assert body["limits"] == {
        "maxFrameBytes": 65536,
        "maxDocBytes": 524288,
        "maxUpdatesPerSecond": 20.0,
        "updateBurst": 40,
    }
    assert body["heartbeatSeconds"] == 4.0


def _app_operations(settings_factory: Any) -> set[tuple[str, str]]:
    app = create_app(settings_factory())
    operations = set()
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue
        if not route.include_in_schema:
            continue
        methods = route.methods
        if methods is None and isinstance(route.endpoint, type):  # an HTTPEndpoint class
            verbs = ("get", "put", "post", "patch", "delete")
            methods = {v.upper() for v in verbs if hasattr(route.endpoint, v)}
        for method in methods or ():
            if method != "HEAD":
                operations.add((route.path, method.lower()))
    return operations


async def test_openapi_matches_routes(api_client: httpx.AsyncClient, settings_factory: Any) -> None:
    doc = (await api_client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete"}
    }
    assert documented == _app_operations(settings_factory)


def _validate(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    operation = doc["paths"][path][method]
    spec = operation["responses"].get(str(response.status_code))
    assert spec is not None, f"{method} {path}: undocumented status {response.status_code}"
    content = spec.get("content")
    if content is None:
        assert response.content == b""
        return
    if "application/json" not in content:
        return
    schema = {**content["application/json"]["schema"], "components": doc["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    # resolve #/components/... against the schema itself
    validator.validate(response.json())


@pytest.mark.parametrize("with_token", [True, False])
async def test_responses_match_their_schemas(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str], with_token: bool
) -> None:
    doc = (await api_client.get("/api/openapi.json")).json()
    headers = admin_headers if with_token else {}
    made = (
        await api_client.post("/api/code-blocks", json=make_block(), headers=admin_headers)
    ).json()
    calls = [
        ("/api/code-blocks", "get", "/api/code-blocks", None),
        ("/api/code-blocks", "post", "/api/code-blocks", make_block()),
        ("/api/code-blocks", "post", "/api/code-blocks", {"title": 1}),
        ("/api/code-blocks/{id}", "get", f"/api/code-blocks/{made['id']}", None),
        ("/api/code-blocks/{id}", "get", "/api/code-blocks/nope", None),
        ("/api/code-blocks/{id}", "patch", f"/api/code-blocks/{made['id']}", {"title": "T"}),
        ("/api/code-blocks/{id}", "put", f"/api/code-blocks/{made['id']}", make_block()),
        ("/api/code-blocks/{id}/sessions", "get", f"/api/code-blocks/{made['id']}/sessions", None),
        ("/api/code-blocks/{id}/admin", "get", f"/api/code-blocks/{made['id']}/admin", None),
        ("/api/code-blocks/{id}/admin", "get", "/api/code-blocks/nope/admin", None),
        ("/api/code-blocks/{id}", "delete", f"/api/code-blocks/{made['id']}", None),
        ("/api/sessions/{sessionId}/replay", "get", "/api/sessions/nope/replay", None),
        ("/api/sessions/{sessionId}/replay", "get", "/api/sessions/a%2Fb/replay", None),
        ("/api/rooms", "get", "/api/rooms", None),
        ("/api/config", "get", "/api/config", None),
        ("/healthz", "get", "/healthz", None),
        ("/readyz", "get", "/readyz", None),
        ("/metrics", "get", "/metrics", None),
        ("/api/openapi.json", "get", "/api/openapi.json", None),
    ]
    for template, method, url, body in calls:
        response = await api_client.request(method, url, json=body, headers=headers)
        _validate(doc, template, method, response)
