"""services/api/routes/web.py: the shell, the bundle, caching and security headers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from services.api.routes import web
from services.api.routes.web import STATIC_DIR


@pytest.fixture
def app() -> Starlette:
    return Starlette(routes=web.routes)


@pytest.fixture
def client(app: Starlette) -> Iterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    yield httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _version() -> str:
    info = json.loads((STATIC_DIR / "build-info.json").read_text())
    return str(info["version"])


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/blocks/0123456789abcdef01234567",
        "/blocks/nope",
        "/admin",
        "/admin/replay/0123456789abcdef01234567",
    ],
)
async def test_pages_serve_the_shell_uncached_with_csp(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    csp = r.headers["content-security-policy"]
    script_src = csp.split("script-src")[1].split(";")[0]
    assert script_src.strip() == "'self'"
    assert "connect-src 'self' ws: wss:" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert f"/static/app.js?v={_version()}" in r.text


async def test_head_of_page(client: httpx.AsyncClient) -> None:
    r = await client.head("/")
    assert r.status_code == 200


async def test_versioned_bundle_is_cached_long(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/static/app.js?v={_version()}")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]
    assert "immutable" in r.headers["cache-control"]
    assert "content-security-policy" in r.headers
    chunk = next((STATIC_DIR / "chunks").iterdir()).name
    r = await client.get(f"/static/chunks/{chunk}")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]


async def test_unversioned_files_are_revalidated(client: httpx.AsyncClient) -> None:
    for path in ("/static/app.js", "/static/build-info.json"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-cache"


async def test_missing_file_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/static/nope.js")
    assert r.status_code == 404


@pytest.mark.parametrize(
    "raw_path",
    [
        "/static/../routes/web.py",
        "/static/chunks/../../routes/web.py",
        "/static/..%2froutes%2fweb.py",
        "/static//etc/passwd",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
    ],
)
async def test_static_refuses_path_traversal(app: Starlette, raw_path: str) -> None:
    # Send the path as-is (httpx would normalise ".." away).
    from urllib.parse import unquote

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 404
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert b"starlette" not in body and b"[project]" not in body


@pytest.mark.parametrize("path", ["/blocks/", "/nope", "/blocks/a/b", "/static-ish/x"])
async def test_unknown_page_paths_get_the_shell_with_404(path: str, settings_factory: Any) -> None:
    """A person who opens an unknown address gets the friendly not-found page (the shell
    routes to it), with status 404; API clients keep the JSON 404."""
    from services.api.app import create_app

    app = create_app(settings_factory())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        r = await client.get(path, headers={"Accept": "text/html,application/xhtml+xml,*/*"})
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert "/static/app.js?v=" in r.text
        assert "connect-src 'self' ws: wss:" in r.headers["content-security-policy"]
        # Not a browser asking for a page: the JSON error every other 404 has.
        for api_path, accept in ((path, "application/json"), ("/api/nope", "text/html")):
            r = await client.get(api_path, headers={"Accept": accept})
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "not_found"
        r = await client.post(path, headers={"Accept": "text/html"})
        assert r.status_code in (404, 405) and r.json()["error"]["code"] != ""


async def test_run_sandbox_page_has_its_own_strict_csp(client: httpx.AsyncClient) -> None:
    r = await client.get("/run/sandbox")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    assert f"/static/runner.js?v={_version()}" in r.text
    csp = {
        d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else ""
        for d in r.headers["content-security-policy"].split("; ")
    }
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'none'"  # no fetch, XHR, WebSocket, EventSource
    assert csp["script-src"] == "'self' blob: 'wasm-unsafe-eval'"  # no eval, no CDN
    assert csp["worker-src"] == "blob:"
    assert csp["sandbox"] == "allow-scripts"  # sandboxed even when opened directly
    assert csp["frame-ancestors"] == "'self'"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    # The room page may frame it (its default-src 'self' covers frames).
    page = await client.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_pyodide_files_are_served_versioned_with_their_types(
    client: httpx.AsyncClient,
) -> None:
    version = json.loads((STATIC_DIR / "build-info.json").read_text())["pyodide"]
    for name, kind in [
        ("pyodide.asm.wasm", "application/wasm"),
        ("pyodide.asm.mjs", "text/javascript"),
        ("python_stdlib.zip", "application/zip"),
        ("pyodide-lock.json", "application/json"),
    ]:
        r = await client.head(f"/static/pyodide/{name}?v={version}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(kind), (name, r.headers["content-type"])
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable", name
