"""The browser UI: the HTML shell for the lobby and room pages, and the built bundle.

The bundle is built from ``web/`` by ``make web`` into ``services/api/static/`` and is
committed, so serving it needs no Node. The shell is never cached (it names the
current bundle version); the bundle itself is cached for a year, because every URL
of it changes when its content does (``?v=<hash>`` on entry files, hashed chunk names).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX = STATIC_DIR / "index.html"

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
        cache = IMMUTABLE if versioned and not path.endswith(".json") else NO_CACHE

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
    Route("/admin", page, methods=["GET", "HEAD"], name="admin_page"),
    Route("/admin/replay/{sessionId}", page, methods=["GET", "HEAD"], name="replay_page"),
    Mount("/static", app=_BundleFiles(STATIC_DIR), name="static"),
]
