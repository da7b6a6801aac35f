"""Client configuration and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.deps import settings_of
from services.api.openapi import build_openapi
from services.api.schemas import Config, Limits


async def config(request: Request) -> Response:
    """What the browser needs before it joins a room: the gateway URLs it picks from
    (empty list: same origin /ws/rooms), the gateways' limits (so an edit that cannot be
    shared is refused before it is made) and how often a gateway sends a heartbeat."""
    s = settings_of(request)
    limits = Limits(
        max_frame_bytes=s.max_frame_bytes,
        max_doc_bytes=s.max_doc_bytes,
        max_updates_per_second=s.max_updates_per_second,
        update_burst=s.update_burst,
    )
    config = Config(
        gateway_urls=list(s.gateway_urls), limits=limits, heartbeat_seconds=s.keepalive_seconds
    )
    return JSONResponse(config.body())


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of this api."""
    pages = [path for path in request.app.state.html_paths]
    return JSONResponse(build_openapi(pages))


routes = [
    Route("/api/config", config, methods=["GET"], name="config"),
    Route("/api/openapi.json", openapi, methods=["GET"], name="openapi"),
]
