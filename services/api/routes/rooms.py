"""Live room status for the lobby, read from the hashes the gateways keep in Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.deps import deps, redis_timeout
from services.api.schemas import Rooms, RoomStatus

_FIELDS = ("session", "n_mentor", "n_student", "n_watcher")


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


async def list_rooms(request: Request) -> Response:
    """Open rooms: {"rooms": [{blockId, mentor, students, watchers}]}, by block id."""
    d = deps(request)
    async with asyncio.timeout(redis_timeout(d.settings)):
        block_ids = sorted(str(b) for b in await d.redis.smembers(d.keys.rooms))
        rows: list[Any] = []
        if block_ids:
            async with d.redis.pipeline(transaction=False) as pipe:
                for block_id in block_ids:
                    pipe.hmget(d.keys.room(block_id).state, list(_FIELDS))
                rows = await pipe.execute()
    rooms = [
        RoomStatus(
            block_id=block_id,
            mentor=_count(n_mentor) > 0,
            students=_count(n_student),
            watchers=_count(n_watcher),
        )
        for block_id, (session, n_mentor, n_student, n_watcher) in zip(block_ids, rows, strict=True)
        if session
    ]
    return JSONResponse(Rooms(rooms=rooms).body())


routes = [Route("/api/rooms", list_rooms, methods=["GET"], name="rooms")]
