"""Client configuration and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.deps import settings_of
from services.api.openapi import build_openapi
from services.api.schemas import Config


async def config(request: Request) -> Response:
    """Gateway URLs the browser picks from (empty list: same origin /ws/rooms)."""
    return JSONResponse(Config(gateway_urls=list(settings_of(request).gateway_urls)).body())


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of this api."""
    pages = [path for path in request.app.state.html_paths]
    return JSONResponse(build_openapi(pages))


routes = [
    Route("/api/config", config, methods=["GET"], name="config"),
    Route("/api/openapi.json", openapi, methods=["GET"], name="openapi"),
]
