"""Code-block routes: public reads, admin writes, and the solution never leaking."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.gateway.blocks import BlockSource
from tests.infra import make_block

pytestmark = pytest.mark.asyncio


async def create(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> Any:
    response = await client.post("/api/code-blocks", json=make_block(**fields), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_list_is_sorted_and_has_no_code(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for title in ("Beta", "alpha", "Alpha", "Beta"):
        await create(api_client, admin_headers, title=title)
    response = await api_client.get("/api/code-blocks")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    blocks = response.json()
    assert [b["title"] for b in blocks] == ["Alpha", "Beta", "Beta", "alpha"]
    betas = [b["id"] for b in blocks if b["title"] == "Beta"]
    assert betas == sorted(betas)  # ties broken by id
    for block in blocks:
        assert set(block) == {"id", "slug", "title", "language", "description"}


async def test_empty_list(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/code-blocks")
    assert response.status_code == 200
    assert response.json() == []


async def test_get_one_has_template_not_solution(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    made = await create(api_client, admin_headers)
    response = await api_client.get(f"/api/code-blocks/{made['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["template"] == made["template"]
    assert body["id"] == made["id"]
    assert set(body) == {
        "id",
        "slug",
        "title",
        "language",
        "description",
        "template",
        "runTimeoutSeconds",
        "createdAt",
        "updatedAt",
    }
    assert body["createdAt"].endswith("+00:00")


@pytest.mark.parametrize(
    "block_id",
    ["000000000000000000000000", "not-an-id", "zzzzzzzzzzzzzzzzzzzzzzzz", "abc", "a" * 25],
)
async def test_unknown_or_malformed_id_is_404(api_client: httpx.AsyncClient, block_id: str) -> None:
    response = await api_client.get(f"/api/code-blocks/{block_id}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_upper_case_id_is_404_like_the_gateway(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """One spelling of a block id everywhere: the gateway closes /ws/rooms/<UPPER> with
    4404, so the api must not serve the block under that spelling either."""
    made = await create(api_client, admin_headers)
    assert (await api_client.get(f"/api/code-blocks/{made['id']}")).status_code == 200
    response = await api_client.get(f"/api/code-blocks/{made['id'].upper()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert BlockSource.valid_id(made["id"]) and not BlockSource.valid_id(made["id"].upper())


async def test_solution_never_in_public_bytes(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    made = await create(api_client, admin_headers)
    secret = made["solution"].encode()
    marker = secret.split(b"SOLUTION-")[1][:32]
    public = [
        "/api/code-blocks",
        f"/api/code-blocks/{made['id']}",
        f"/api/code-blocks/{made['id']}x",
        "/api/rooms",
        "/api/config",
        "/api/openapi.json",
        "/metrics",
        "/healthz",
        "/readyz",
        f"/api/code-blocks/{made['id']}/sessions",  # 401 without a token
        f"/api/code-blocks/{made['id']}/admin",  # 401 without a token
    ]
    for path in public:
        response = await api_client.get(path)
        assert marker not in response.content, path
    # the error of a conflicting write echoes no field values either
    dup = await api_client.post(
        "/api/code-blocks", json=make_block(slug=made["slug"]), headers=admin_headers
    )
    assert dup.status_code == 409
    assert b"SOLUTION-" not in dup.content


async def test_admin_create_returns_solution_and_location(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = make_block()
    response = await api_client.post("/api/code-blocks", json=body, headers=admin_headers)
    assert response.status_code == 201
    made = response.json()
    assert made["solution"] == body["solution"]
    assert response.headers["location"] == f"/api/code-blocks/{made['id']}"


async def test_duplicate_slug_is_409(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    made = await create(api_client, admin_headers)
    again = await api_client.post(
        "/api/code-blocks", json=make_block(slug=made["slug"]), headers=admin_headers
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_slug"
    other = await create(api_client, admin_headers)
    patch = await api_client.patch(
        f"/api/code-blocks/{other['id']}", json={"slug": made["slug"]}, headers=admin_headers
    )
    assert patch.status_code == 409


async def test_put_replaces_and_patch_updates(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    made = await create(api_client, admin_headers)
    url = f"/api/code-blocks/{made['id']}"
    replacement = make_block(title="Replaced", language="python", description="")
    put = await api_client.put(url, json=replacement, headers=admin_headers)
    assert put.status_code == 200, put.text
    assert put.json()["title"] == "Replaced"
    assert put.json()["slug"] == replacement["slug"]
    assert put.json()["createdAt"] == made["createdAt"]
    assert put.json()["updatedAt"] >= made["updatedAt"]

    partial = await api_client.patch(url, json={"title": "Patched"}, headers=admin_headers)
    assert partial.status_code == 200
    assert partial.json()["title"] == "Patched"
    assert partial.json()["language"] == "python"
    public = (await api_client.get(url)).json()
    assert public["title"] == "Patched"

    # PUT requires every required field
    missing = await api_client.put(url, json={"title": "x"}, headers=admin_headers)
    assert missing.status_code == 400
    null = await api_client.patch(url, json={"title": None}, headers=admin_headers)
    assert null.status_code == 400
    assert "title" in null.json()["error"]["message"]


async def test_delete(api_client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    made = await create(api_client, admin_headers)
    url = f"/api/code-blocks/{made['id']}"
    response = await api_client.delete(url, headers=admin_headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await api_client.get(url)).status_code == 404
    assert (await api_client.delete(url, headers=admin_headers)).status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", ""),
        ("title", "x" * 201),
        ("slug", "Upper"),
        ("slug", "-leading-dash"),
        ("slug", "a" * 65),
        ("language", "cobol"),
        ("description", "d" * 2001),
        ("template", "t" * 65537),
        ("extra", "field"),
    ],
)
async def test_invalid_fields_are_400(
    api_client_factory: Any, admin_headers: dict[str, str], field: str, value: Any
) -> None:
    client = await api_client_factory(max_body_bytes=1 << 20)
    response = await client.post(
        "/api/code-blocks", json=make_block(**{field: value}), headers=admin_headers
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in error["message"]
    assert value not in error["message"] or len(value) < 8


async def test_boundary_values_accepted(
    api_client_factory: Any, admin_headers: dict[str, str]
) -> None:
    client = await api_client_factory(max_body_bytes=1 << 20)
    body = make_block(title="x" * 200, slug="a" * 64, description="d" * 2000, template="t" * 65536)
    response = await client.post("/api/code-blocks", json=body, headers=admin_headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"text"', "application/json", 400),
        (b"title=x", "application/x-www-form-urlencoded", 415),
        (b"{}", "text/plain", 415),
        (b"", "application/json", 400),
    ],
)
async def test_bad_bodies(
    api_client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    content: bytes,
    content_type: str,
    status: int,
) -> None:
    response = await api_client.post(
        "/api/code-blocks",
        content=content,
        headers={**admin_headers, "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"code", "message"}


async def test_body_too_large_is_413(
    api_client_factory: Any, admin_headers: dict[str, str]
) -> None:
    client = await api_client_factory(max_body_bytes=2048)
    response = await client.post(
        "/api/code-blocks", json=make_block(template="x" * 4096), headers=admin_headers
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: counted while streaming
        yield b'{"title": "' + b"x" * 3000
        yield b'"}'

    streamed = await client.post(
        "/api/code-blocks",
        content=chunks(),
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413


# --- admin authentication -----------------------------------------------------------------


WRITES = [
    ("POST", "/api/code-blocks"),
    ("PUT", "/api/code-blocks/{id}"),
    ("PATCH", "/api/code-blocks/{id}"),
    ("DELETE", "/api/code-blocks/{id}"),
    ("GET", "/api/code-blocks/{id}/sessions"),
    ("GET", "/api/code-blocks/{id}/admin"),
    ("GET", "/api/sessions/{id}/replay"),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({}, "", 401),
        ({"Authorization": "Bearer wrong-token"}, "", 403),
        ({"Authorization": "Basic dGVzdA=="}, "", 401),
        ({"Authorization": "Bearer"}, "", 401),
        ({}, "?token=test-admin-token", 401),
        ({}, "?access_token=test-admin-token", 401),
    ],
)
async def test_admin_auth_refused(
    api_client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    headers: dict[str, str],
    query: str,
    status: int,
) -> None:
    made = await create(api_client, admin_headers)
    url = path.format(id=made["id"]) + query
    response = await api_client.request(method, url, json=make_block(), headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await api_client.get(f"/api/code-blocks/{made['id']}")).status_code == 200


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_writes_disabled_without_admin_token(
    api_client_factory: Any, method: str, path: str
) -> None:
    client = await api_client_factory(admin_token="")
    url = path.format(id="0" * 24)
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        response = await client.request(method, url, json=make_block(), headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["message"] == "admin writes are disabled"


async def test_sessions_newest_first(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.documents import RoomSession

    made = await create(api_client, admin_headers)
    other = await create(api_client, admin_headers)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(3):
        await RoomSession(
            block_id=made["id"],
            session_id=f"s{i}-{made['id']}",
            started_at=start + timedelta(minutes=i),
            ended_at=start + timedelta(minutes=i, seconds=30),
            final_code="code",
            solved=i == 1,
            peak_students=i,
            reason="mentor-left",
        ).insert()
    await RoomSession(block_id=other["id"], session_id=f"x-{other['id']}").insert()

    response = await api_client.get(
        f"/api/code-blocks/{made['id']}/sessions", headers=admin_headers
    )
    assert response.status_code == 200
    sessions = response.json()
    full = await api_client.get(f"/api/code-blocks/{made['id']}/admin", headers=admin_headers)
    assert full.status_code == 200 and full.json()["solution"] == made["solution"]
    assert [s["sessionId"] for s in sessions] == [f"s{i}-{made['id']}" for i in (2, 1, 0)]
    assert sessions[1]["solved"] is True
    assert sessions[0]["startedAt"] == "2026-01-01T00:02:00+00:00"
    missing = await api_client.get(f"/api/code-blocks/{'0' * 24}/sessions", headers=admin_headers)
    assert missing.status_code == 404


async def test_run_timeout_is_validated_and_null_sets_the_default_back(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    made = await create(api_client, admin_headers)
    assert made["runTimeoutSeconds"] is None
    url = f"/api/code-blocks/{made['id']}"
    for bad in (0, 0.5, 61, "5", True, "nan"):
        r = await api_client.patch(url, json={"runTimeoutSeconds": bad}, headers=admin_headers)
        assert r.status_code == 400, bad
    r = await api_client.patch(url, json={"runTimeoutSeconds": 2.5}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["runTimeoutSeconds"] == 2.5
    assert (await api_client.get(url)).json()["runTimeoutSeconds"] == 2.5
    r = await api_client.patch(url, json={"runTimeoutSeconds": None}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["runTimeoutSeconds"] is None
