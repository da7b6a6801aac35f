"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.deps import deps
from services.api.metrics import ApiMetrics
from services.api.schemas import Health, Ready, ReadyChecks

READY_TIMEOUT = 1.0  # seconds per dependency


async def healthz(request: Request) -> Response:
    """Alive: answers as long as the process serves requests."""
    return JSONResponse(Health().body())


async def _check(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await probe()
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def readyz(request: Request) -> Response:
    """Ready: MongoDB and Redis both answer a ping within a second."""
    d = deps(request)

    async def mongo() -> None:
        await d.mongo.ping()
        await d.mongo.ensure()

    mongo_state, redis_state = await asyncio.gather(_check(mongo), _check(d.redis_ping))
    ok = mongo_state == redis_state == "ok"
    ready = Ready(
        status="ok" if ok else "unavailable",
        checks=ReadyChecks(mongodb=mongo_state, redis=redis_state),
    )
    return JSONResponse(ready.body(), status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    registry = cast(ApiMetrics, request.app.state.metrics).registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/readyz", readyz, methods=["GET"], name="readyz"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
]
