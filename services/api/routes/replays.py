"""Admin: the replay of an archived session (docs/replay.md)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.api.auth import require_admin
from services.api.deps import deps
from services.api.errors import ApiError
from shared.db import room_session_json
from shared.documents import RoomSession
from shared.replay import decode_replay

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def get_replay(request: Request) -> Response:
    """The session's metadata, its authors and its steps; 404 for an unknown session or
    one archived without a replay."""
    d = deps(request)
    require_admin(request, d.settings)
    session_id = request.path_params["sessionId"]
    if not _SESSION_ID.fullmatch(session_id):
        raise ApiError(404, "no such session")
    async with d.mongo_op():
        raw = await RoomSession.get_pymongo_collection().find_one({"session_id": session_id})
    if raw is None:
        raise ApiError(404, "no such session")
    blob = raw.pop("replay", None)
    if not blob:
        raise ApiError(404, "this session was archived without a replay", code="no_replay")
    try:
        replay = decode_replay(bytes(blob))
    except ValueError:
        raise ApiError(404, "this session's replay cannot be read", code="no_replay") from None
    session = room_session_json(RoomSession.model_validate(raw))
    return _OrjsonResponse(
        {
            "session": session,
            "authors": replay.get("authors", []),
            "clients": replay.get("clients", {}),
            "steps": replay.get("steps", []),
            "bound": replay.get("bound", {}),
        },
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route("/api/sessions/{sessionId}/replay", get_replay, methods=["GET"], name="replay"),
]
