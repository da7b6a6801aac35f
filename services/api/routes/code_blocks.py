"""Code blocks: public reads (never the solution) and admin writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import DuplicateKeyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.auth import require_admin
from services.api.body import read_json, validate
from services.api.deps import deps
from services.api.errors import ApiError
from shared.db import admin_block, public_block, room_session_json
from shared.documents import (
    BlockPatch,
    BlockSpec,
    CodeBlock,
    RoomSession,
    is_block_id,
    utcnow,
)

MAX_SESSIONS = 200
Endpoint = Callable[[Request], Awaitable[Response]]


class _Summary(BaseModel):
    """Projection for the lobby list: the solution and template are never read."""

    model_config = ConfigDict(populate_by_name=True)

    id: PydanticObjectId = Field(alias="_id")
    slug: str
    title: str
    language: str
    description: str = ""


def _object_id(request: Request) -> PydanticObjectId:
    raw = request.path_params["id"]
    if not is_block_id(raw):  # the gateway refuses any other spelling (4404)
        raise ApiError(404, "no such code block")
    return PydanticObjectId(raw)


async def _block_or_404(block_id: PydanticObjectId) -> CodeBlock:
    doc = await CodeBlock.get(block_id)
    if doc is None:
        raise ApiError(404, "no such code block")
    return doc


def _duplicate(slug: str) -> ApiError:
    return ApiError(409, f"a code block with slug {slug!r} already exists", code="duplicate_slug")


async def list_blocks(request: Request) -> Response:
    """The lobby: every block as {id, slug, title, language, description}, by title."""
    d = deps(request)
    async with d.mongo_op():
        rows = await CodeBlock.find_all().sort("+title", "+_id").project(_Summary).to_list()
    return JSONResponse(
        [
            {
                "id": str(r.id),
                "slug": r.slug,
                "title": r.title,
                "language": r.language,
                "description": r.description,
            }
            for r in rows
        ]
    )


async def get_block(request: Request) -> Response:
    """One block with its template; never its solution."""
    block_id = _object_id(request)
    async with deps(request).mongo_op():
        doc = await _block_or_404(block_id)
    return JSONResponse(public_block(doc))


async def create_block(request: Request) -> Response:
    """Admin: create a block (the response includes the solution)."""
    d = deps(request)
    require_admin(request, d.settings)
    spec = validate(BlockSpec, await read_json(request, d.settings.max_body_bytes))
    async with d.mongo_op():
        doc = CodeBlock(**spec.model_dump())  # needs Beanie initialised
        try:
            await doc.insert()
        except DuplicateKeyError:
            raise _duplicate(spec.slug) from None
    return JSONResponse(
        admin_block(doc),
        status_code=201,
        headers={"Location": f"/api/code-blocks/{doc.id}"},
    )


async def _write(doc: CodeBlock, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        setattr(doc, name, value)
    doc.updated_at = utcnow()
    try:
        await doc.save()
    except DuplicateKeyError:
        raise _duplicate(doc.slug) from None


async def replace_block(request: Request) -> Response:
    """Admin: replace every writable field of a block."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    spec = validate(BlockSpec, await read_json(request, d.settings.max_body_bytes))
    async with d.mongo_op():
        doc = await _block_or_404(block_id)
        await _write(doc, spec.model_dump())
    return JSONResponse(admin_block(doc))


async def patch_block(request: Request) -> Response:
    """Admin: change only the fields given."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    patch = validate(BlockPatch, await read_json(request, d.settings.max_body_bytes))
    changes = patch.model_dump(exclude_unset=True)
    nulls = sorted(name for name, value in changes.items() if value is None)
    if nulls:
        raise ApiError(400, f"fields may not be null: {', '.join(nulls)}", code="invalid_input")
    async with d.mongo_op():
        doc = await _block_or_404(block_id)
        await _write(doc, changes)
    return JSONResponse(admin_block(doc))


async def delete_block(request: Request) -> Response:
    """Admin: delete a block."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    async with d.mongo_op():
        doc = await _block_or_404(block_id)
        await doc.delete()
    return Response(status_code=204)


async def list_sessions(request: Request) -> Response:
    """Admin: the archived room sessions of a block, newest first."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    async with d.mongo_op():
        await _block_or_404(block_id)
        sessions = (
            await RoomSession.find({"block_id": str(block_id)})
            .sort("-started_at", "-_id")
            .limit(MAX_SESSIONS)
            .to_list()
        )
    return JSONResponse([room_session_json(s) for s in sessions])


def by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint per path, so that 405 answers carry the full Allow header."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


routes = [
    Route(
        "/api/code-blocks",
        by_method(GET=list_blocks, POST=create_block),
        methods=["GET", "POST"],
        name="code_blocks",
    ),
    Route(
        "/api/code-blocks/{id}",
        by_method(GET=get_block, PUT=replace_block, PATCH=patch_block, DELETE=delete_block),
        methods=["GET", "PUT", "PATCH", "DELETE"],
        name="code_block",
    ),
    Route(
        "/api/code-blocks/{id}/sessions",
        list_sessions,
        methods=["GET"],
        name="sessions",
    ),
]
