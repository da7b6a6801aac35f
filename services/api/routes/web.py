"""The browser UI: the HTML shell for the lobby and room pages, and the built bundle.

The bundle is built from ``web/`` by ``make web`` into ``services/api/static/`` and is
committed, so serving it needs no Node. The shell is never cached (it names the
current bundle version); the bundle itself is cached for a year, because every URL
of it changes when its content does (``?v=<hash>`` on entry files, hashed chunk names).
"""

from __future__ import annotations

from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX = STATIC_DIR / "index.html"
RUNNER = STATIC_DIR / "runner.html"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        # CodeMirror positions remote carets and selections with style attributes.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        # Room sockets may live on other hosts/ports (GATEWAY_URLS).
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

# The sandbox frame that runs user code (docs/web.md, "Running code"). The room page
# loads it in an iframe with sandbox="allow-scripts" (an opaque origin); the policy's own
# `sandbox` directive makes it sandboxed even when opened directly. It may run our
# script and workers started from blob: URLs (the user's code is one), compile
# WebAssembly (Pyodide), and connect nowhere: no fetch, XHR, WebSocket or EventSource;
# its workers inherit the policy.
RUNNER_CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self' blob: 'wasm-unsafe-eval'",
        "worker-src blob:",
        "connect-src 'none'",
        "img-src 'none'",
        "style-src 'none'",
        "font-src 'none'",
        "media-src 'none'",
        "object-src 'none'",
        "frame-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "sandbox allow-scripts",
    )
)

RUNNER_HEADERS: dict[str, str] = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": RUNNER_CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
    "Cross-Origin-Resource-Policy": "same-origin",
}

NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


async def page(request: Request) -> Response:
    """The HTML shell; the bundle routes on the client (lobby, room, not found)."""
    if not INDEX.is_file():
        return JSONResponse(
            {"error": {"code": "bundle_missing", "message": "web bundle not built: run make web"}},
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )
    return FileResponse(
        INDEX,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": NO_CACHE},
    )


class _UnknownPage(BaseRoute):
    """Any other path a person opens (a GET or HEAD that accepts HTML, outside /api/):
    the shell with status 404, which shows the friendly not-found page. Everything else
    matches nothing here, so /api/*, other methods and non-browser clients keep the
    JSON 404 (or 405) of every other error."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return Match.NONE, {}
        if str(scope["path"]).startswith("/api/"):
            return Match.NONE, {}
        accept = Headers(scope=scope).get("accept", "")
        return (Match.FULL, {}) if "text/html" in accept else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if INDEX.is_file():
            response = FileResponse(
                INDEX,
                status_code=404,
                media_type="text/html; charset=utf-8",
                headers={**SECURITY_HEADERS, "Cache-Control": NO_CACHE},
            )
        else:
            response = await page(Request(scope, receive))
        await response(scope, receive, send)


async def runner(request: Request) -> Response:
    """The sandbox frame in which the room page runs code (no-cache: it names the bundle
    version)."""
    if not RUNNER.is_file():
        return JSONResponse(
            {"error": {"code": "bundle_missing", "message": "web bundle not built: run make web"}},
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )
    return FileResponse(
        RUNNER,
        media_type="text/html; charset=utf-8",
        headers={**RUNNER_HEADERS, "Cache-Control": NO_CACHE},
    )


class _BundleFiles:
    """StaticFiles plus cache and security headers.

    StaticFiles already refuses paths that resolve outside its directory (``..``,
    absolute paths, symlinks out), answering 404.
    """

    def __init__(self, directory: Path) -> None:
        self._files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        versioned = b"v=" in scope.get("query_string", b"") or "/chunks/" in path
        # build-info.json is never cached; Pyodide's lock file is as versioned as the rest.
        cacheable = not path.endswith(".json") or "/pyodide/" in path
        cache = IMMUTABLE if versioned and cacheable else NO_CACHE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                headers = list(message.get("headers", []))
                headers.append((b"cache-control", cache.encode()))
                for name, value in SECURITY_HEADERS.items():
                    headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self._files(scope, receive, send_with_headers)


routes: list[BaseRoute] = [
    Route("/", page, methods=["GET", "HEAD"], name="lobby_page"),
    Route("/blocks/{id}", page, methods=["GET", "HEAD"], name="room_page"),
    Route("/run/sandbox", runner, methods=["GET", "HEAD"], name="run_sandbox"),
    Route("/admin", page, methods=["GET", "HEAD"], name="admin_page"),
    Route("/admin/replay/{sessionId}", page, methods=["GET", "HEAD"], name="replay_page"),
    Mount("/static", app=_BundleFiles(STATIC_DIR), name="static"),
]

# Last of all the app's routes (services/api/app.py), after every real one.
fallback: list[BaseRoute] = [
    _UnknownPage(),
]
