"""The REST api under attack: fuzzing against its own OpenAPI document, hostile bodies,
path traversal, admin authentication, and the solution's secrecy on every route."""

from __future__ import annotations

import asyncio
import hmac
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.requests import Request

from services.api import auth
from services.api.errors import ApiError
from services.api.routes.web import STATIC_DIR
from shared.settings import load_settings
from tests.infra import EmbeddedMongo, Fleet, RedisServer, make_block

pytestmark = [pytest.mark.fleet]

MAX_BODY = 4096
ADMIN = {"Authorization": f"Bearer {Fleet.ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path_factory.mktemp("rest"),
        gateways=0,
        redis=redis_server,
        mongo=mongo,
        env={"MAX_BODY_BYTES": MAX_BODY},
        ready="/readyz",
    )
    with fleet:
        yield fleet


@pytest.fixture(scope="module")
def base(api: Fleet) -> str:
    assert api.api is not None
    return api.api.url


@pytest.fixture(scope="module")
def secret_block(api: Fleet) -> dict[str, Any]:
    marker = "SOLUTION-" + uuid.uuid4().hex
    block = api.new_block(solution=f"const x = 1; // {marker}\n")
    return {"id": block["id"], "marker": marker}


@pytest.fixture(scope="module")
def api_schema(base: str, secret_block: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(base + "/api/openapi.json")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
@pytest.mark.parametrize("as_admin", [False, True], ids=["anonymous", "admin"])
def test_openapi_fuzz(api_schema: Any, secret_block: dict[str, Any], as_admin: bool) -> None:
    """Every operation of /api/openapi.json, 30 generated cases each (schemathesis's
    pytest plugin does not run on this pytest, so the cases are drawn here)."""
    headers = ADMIN if as_admin else {}
    statuses: dict[str, set[int]] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(operation.label, set())

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            seen.add(response.status_code)  # noqa: B023 - run() is called right below
            case.validate_response(response, checks=CHECKS)
            admin_read = case.path.endswith("/admin")  # the one GET that shows a solution
            assert secret_block["marker"] not in response.text or (
                as_admin and (case.method != "GET" or admin_read)
            )
            if (
                case.method == "GET"
                and "sessions" not in case.path
                and not admin_read
                and response.status_code == 200
            ):
                try:
                    data = orjson.loads(response.content)
                except orjson.JSONDecodeError:
                    data = None  # the HTML shell
                assert not _has_key(data, "solution")

        run()
    print("statuses by operation: " + "; ".join(f"{k} {sorted(v)}" for k, v in statuses.items()))


def _has_key(data: Any, key: str) -> bool:
    if isinstance(data, dict):
        return key in data or any(_has_key(v, key) for v in data.values())
    if isinstance(data, list):
        return any(_has_key(v, key) for v in data)
    return False


# --- hostile bodies ------------------------------------------------------------------------------


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] and error["message"]
    return error


def test_oversized_bodies_are_413(base: str) -> None:
    big = orjson.dumps(make_block(description="d" * (MAX_BODY * 2)))
    _error(
        httpx.post(
            base + "/api/code-blocks",
            content=big,
            headers={**ADMIN, "Content-Type": "application/json"},
        ),
        413,
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"title": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.post(
        base + "/api/code-blocks",
        content=chunks(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    _error(r, 413)
    status, data = asyncio.run(
        _raw(
            base,
            b"POST /api/code-blocks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: {ADMIN['Authorization']}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{}",
        )
    )
    assert status == 413, data[:300]  # refused from the declared length, before reading


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "application/jsonx",
    ],
)
def test_wrong_content_types_are_415(base: str, content_type: str) -> None:
    headers = {**ADMIN, "Content-Type": content_type} if content_type else ADMIN
    body = orjson.dumps(make_block())
    _error(httpx.post(base + "/api/code-blocks", content=body, headers=headers), 415)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"nul\x00l",
        b'{"title": "a"',
        b"\xff\xfe{}",
        b"[]",
        b"123",
        b"NaN",
        b'{"a": 1e999999}',
    ],
)
def test_invalid_json_is_400(base: str, body: bytes) -> None:
    headers = {**ADMIN, "Content-Type": "application/json"}
    _error(httpx.post(base + "/api/code-blocks", content=body, headers=headers), 400)


def test_lone_surrogate_is_400_not_500(base: str) -> None:
    body = orjson.dumps(make_block()).replace(b'"Sample block"', b'"bad \\ud800 title"')
    r = httpx.post(
        base + "/api/code-blocks",
        content=body,
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    "title",
    [
        "مرحبا بالعالم",
        "zero\u200bwidth\u200d",
        "emoji 🎉🧑‍💻👍🏽",
        "\u202eevil\u202c",
        "ﬁ ｆｕｌｌ",
        "a" * 200,
    ],
)
def test_unicode_titles_round_trip(base: str, title: str) -> None:
    r = httpx.post(base + "/api/code-blocks", json=make_block(title=title), headers=ADMIN)
    assert r.status_code == 201, r.text
    got = httpx.get(base + f"/api/code-blocks/{r.json()['id']}").json()
    assert got["title"] == title and "solution" not in got


# --- static files ---------------------------------------------------------------------------------


TRAVERSALS = [
    "/static/../pyproject.toml",
    "/static/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2fpyproject.toml",
    "/static/%252e%252e/pyproject.toml",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static/....//pyproject.toml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..\\..\\pyproject.toml",
    "/static/chunks/../../../../pyproject.toml",
    "/static/%c0%ae%c0%ae/pyproject.toml",
    "/static/app.js%00.html",
]


async def _raw_get(base: str, path: str) -> tuple[int, bytes]:
    return await _raw(base, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


async def _raw(base: str, request: bytes) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_in_static_is_404(base: str, path: str) -> None:
    status, data = await _raw_get(base, path)
    assert status in (400, 404), (status, data[:200])
    assert b"[project]" not in data and b"root:" not in data


# --- admin authentication -------------------------------------------------------------------------


def test_admin_routes_refuse_without_or_with_a_wrong_token(
    base: str, secret_block: dict[str, Any]
) -> None:
    sessions = f"/api/code-blocks/{secret_block['id']}/sessions"
    for method, path in (
        ("POST", "/api/code-blocks"),
        ("DELETE", f"/api/code-blocks/{secret_block['id']}"),
        ("GET", sessions),
    ):
        json = make_block() if method == "POST" else None
        _error(httpx.request(method, base + path, json=json), 401)
        for bad in (
            "Bearer wrong",
            "Bearer " + Fleet.ADMIN_TOKEN + "x",
            "Basic " + Fleet.ADMIN_TOKEN,
            "Bearer",
            Fleet.ADMIN_TOKEN,
        ):
            r = httpx.request(method, base + path, json=json, headers={"Authorization": bad})
            assert r.status_code in (401, 403), (bad, r.status_code)
        r = httpx.request(
            method,
            base + path + f"?token={Fleet.ADMIN_TOKEN}&admin_token={Fleet.ADMIN_TOKEN}",
            json=json,
        )
        _error(r, 401)  # a token in the query string is never looked at
    assert (
        httpx.get(base + f"/api/code-blocks/{secret_block['id']}").status_code == 200
    )  # still there


def test_admin_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module auth imports
    settings_ = load_settings(admin_token="s3cret-token")
    with pytest.raises(ApiError):
        auth.require_admin(_request("Bearer guess"), settings_)
    auth.require_admin(_request("Bearer s3cret-token"), settings_)
    # Both decisions came from compare_digest, on the whole tokens. (A timing test
    # cannot tell a naive compare from noise on a shared machine; this can.)
    assert calls == [(b"guess", b"s3cret-token"), (b"s3cret-token", b"s3cret-token")]


def _request(authorization: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"authorization", authorization.encode())],
        }
    )


# --- the solution on every public route ---------------------------------------------------------


def test_solution_is_on_no_public_route(base: str, secret_block: dict[str, Any]) -> None:
    marker, block_id = secret_block["marker"], secret_block["id"]
    paths = [
        "/",
        f"/blocks/{block_id}",
        "/api/code-blocks",
        f"/api/code-blocks/{block_id}",
        f"/api/code-blocks/{block_id.upper()}",
        "/api/rooms",
        "/api/config",
        "/api/openapi.json",
        "/healthz",
        "/readyz",
        "/metrics",
        f"/api/code-blocks/{block_id}/sessions",
    ]
    paths += [
        "/static/" + str(p.relative_to(STATIC_DIR))
        for p in Path(STATIC_DIR).rglob("*")
        if p.is_file()
    ]
    for path in paths:
        for method in ("GET", "HEAD", "OPTIONS"):
            r = httpx.request(method, base + path)
            assert marker not in r.text, (method, path)
            assert "solution" not in r.headers.get("location", "")
    # Error texts do not quote what was sent.
    probes = [
        httpx.get(base + f"/api/code-blocks/{marker}"),
        httpx.post(
            base + "/api/code-blocks", json={"title": marker, "language": marker}, headers=ADMIN
        ),
        httpx.patch(
            base + f"/api/code-blocks/{block_id}", json={"language": marker}, headers=ADMIN
        ),
        httpx.post(
            base + "/api/code-blocks",
            content=b'{"x": "' + marker.encode() + b'"',
            headers={**ADMIN, "Content-Type": "application/json"},
        ),
    ]
    for r in probes:
        assert r.status_code in (400, 404), r.text
        assert marker not in r.text, r.text
