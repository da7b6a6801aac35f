"""Admin: the replay of an archived session (docs/replay.md)."""

from __future__ import annotations

import asyncio
import gzip
import re

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


GZIP_LEVEL = 6  # a 30-minute class: 1.2 MB of JSON -> about a tenth, in ~30 ms


def _accepts_gzip(request: Request) -> bool:
    accepted = request.headers.get("accept-encoding", "")
    return any(part.split(";")[0].strip() == "gzip" for part in accepted.split(","))


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
    body = orjson.dumps(
        {
            "session": session,
            "authors": replay.get("authors", []),
            "clients": replay.get("clients", {}),
            "steps": replay.get("steps", []),
            "bound": replay.get("bound", {}),
        }
    )
    headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    if _accepts_gzip(request):  # every browser does: the page loads a tenth of the bytes
        body = await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


routes = [
    Route("/api/sessions/{sessionId}/replay", get_replay, methods=["GET"], name="replay"),
]
