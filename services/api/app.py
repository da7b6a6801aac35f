"""Composition root of the api: settings in, a Starlette app out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from services.api.block_cache import BlockCache
from services.api.deps import Deps, make_redis
from services.api.errors import HANDLERS
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.routes import code_blocks, health, meta, replays, rooms, web
from shared.db import MongoGate, mongo_client
from shared.keys import Keys
from shared.settings import Settings

log = logging.getLogger(__name__)


def _html_paths(routes: list[BaseRoute]) -> list[str]:
    return [
        r.path
        for r in routes
        if isinstance(r, Route) and r.include_in_schema and "GET" in (r.methods or ())
    ]


def create_app(settings: Settings) -> Starlette:
    """The api, with its MongoDB and Redis clients opened and closed by the lifespan.

    MongoDB need not be reachable at start: Beanie is initialised in the background
    and on demand, and until then data routes answer 503 while /healthz answers 200.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = mongo_client(settings, appname="coderoom-api")
        redis = make_redis(settings)
        gate = MongoGate(client, settings)
        keys = Keys(settings.redis_prefix)
        app.state.deps = Deps(
            settings=settings,
            mongo=gate,
            redis=redis,
            keys=keys,
            blocks=BlockCache(redis, keys, settings),
        )
        gate.start()
        try:
            yield
        finally:
            await gate.aclose()
            await redis.aclose()
            await client.close()

    web_routes: list[BaseRoute] = list(web.routes)
    routes: list[BaseRoute] = [
        *health.routes,
        *meta.routes,
        *code_blocks.routes,
        *rooms.routes,
        *replays.routes,
        *web_routes,
        *web.fallback,
    ]
    metrics = ApiMetrics()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=HANDLERS,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.html_paths = _html_paths(web_routes)
    return app
