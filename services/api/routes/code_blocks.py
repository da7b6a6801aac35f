"""Code blocks: public reads (never the solution) and admin writes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError
from redis.exceptions import RedisError
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.api.auth import require_admin
from services.api.body import read_json, validate
from services.api.deps import Deps, deps, redis_timeout
from services.api.errors import ApiError
from shared.db import (
    BLOCK_COPY_MISSING_MS,
    admin_block,
    encode_block_copy,
    public_block,
    room_session_json,
)
from shared.documents import (
    BlockPatch,
    BlockSpec,
    CodeBlock,
    RoomSession,
    is_block_id,
    utcnow,
)
from shared.views import BlockSummary

MAX_SESSIONS = 200


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
    """The lobby: every block as {id, slug, title, language, description}, by title.

    Served from the block cache (services/api/block_cache.py): X-Cache says hit, miss
    or stale, Age how old the copy is."""
    d = deps(request)

    async def load() -> list[dict[str, str]]:
        async with d.mongo_op():
            # Only the summary's fields are read: never a template, never a solution.
            rows = await CodeBlock.find_all().sort("+title", "+_id").project(BlockSummary).to_list()
        return [row.body() for row in rows]

    cached = await d.blocks.get("list", load)
    return JSONResponse(cached.value, headers=cached.headers())


async def _copy_for_gateways(d: Deps, block_id: str, doc: CodeBlock | None) -> None:
    """Leave the block for the gateways' room opens (best effort: a cache)."""
    ttl_ms = int(d.settings.block_cache_seconds * 1000)
    if ttl_ms <= 0:
        return
    parts = (doc.template, doc.solution) if doc is not None else None
    px = ttl_ms if doc is not None else min(ttl_ms, BLOCK_COPY_MISSING_MS)
    with contextlib.suppress(RedisError, TimeoutError, OSError):
        async with asyncio.timeout(redis_timeout(d.settings)):
            await d.redis.set(d.keys.block_copy(block_id), encode_block_copy(parts), px=px)


async def get_block(request: Request) -> Response:
    """One block with its template; never its solution (cached as the list is)."""
    block_id = _object_id(request)
    d = deps(request)

    async def load() -> dict[str, Any] | None:
        async with d.mongo_op():
            doc = await CodeBlock.get(block_id)
        await _copy_for_gateways(d, str(block_id), doc)
        return public_block(doc) if doc is not None else None

    cached = await d.blocks.get(f"block:{block_id}", load)
    if cached.value is None:
        raise ApiError(404, "no such code block")
    return JSONResponse(cached.value, headers=cached.headers())


async def get_admin_block(request: Request) -> Response:
    """Admin: one block with its solution (what the admin area's editor loads)."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    async with d.mongo_op():
        doc = await _block_or_404(block_id)
    return JSONResponse(admin_block(doc), headers={"Cache-Control": "no-store"})


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
    await d.blocks.invalidate(str(doc.id))
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
    await d.blocks.invalidate(str(block_id))
    return JSONResponse(admin_block(doc))


_NULLABLE = frozenset({"run_timeout_seconds"})  # null sets the default back


async def patch_block(request: Request) -> Response:
    """Admin: change only the fields given."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    patch = validate(BlockPatch, await read_json(request, d.settings.max_body_bytes))
    changes = patch.model_dump(exclude_unset=True)
    nulls = sorted(
        name for name, value in changes.items() if value is None and name not in _NULLABLE
    )
    if nulls:
        raise ApiError(400, f"fields may not be null: {', '.join(nulls)}", code="invalid_input")
    async with d.mongo_op():
        doc = await _block_or_404(block_id)
        await _write(doc, changes)
    await d.blocks.invalidate(str(block_id))
    return JSONResponse(admin_block(doc))


async def delete_block(request: Request) -> Response:
    """Admin: delete a block."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    async with d.mongo_op():
        doc = await _block_or_404(block_id)
        await doc.delete()
    await d.blocks.invalidate(str(block_id))
    return Response(status_code=204)


async def list_sessions(request: Request) -> Response:
    """Admin: the archived room sessions of a block, newest first."""
    d = deps(request)
    require_admin(request, d.settings)
    block_id = _object_id(request)
    async with d.mongo_op():
        await _block_or_404(block_id)
        # The replay (the bulk of a session document) is left out: only its route reads it.
        cursor = (
            RoomSession.get_pymongo_collection()
            .find({"block_id": str(block_id)}, projection={"replay": 0})
            .sort([("started_at", -1), ("_id", -1)])
            .limit(MAX_SESSIONS)
        )
        sessions = [RoomSession.model_validate(raw) async for raw in cursor]
    return JSONResponse([room_session_json(s) for s in sessions])


class CodeBlocks(HTTPEndpoint):
    """/api/code-blocks (405 answers list the methods defined here in Allow)."""

    get = staticmethod(list_blocks)
    post = staticmethod(create_block)


class CodeBlockItem(HTTPEndpoint):
    """/api/code-blocks/{id}."""

    get = staticmethod(get_block)
    put = staticmethod(replace_block)
    patch = staticmethod(patch_block)
    delete = staticmethod(delete_block)


routes = [
    Route("/api/code-blocks", CodeBlocks, name="code_blocks"),
    Route("/api/code-blocks/{id}", CodeBlockItem, name="code_block"),
    Route(
        "/api/code-blocks/{id}/admin",
        get_admin_block,
        methods=["GET"],
        name="code_block_admin",
    ),
    Route(
        "/api/code-blocks/{id}/sessions",
        list_sessions,
        methods=["GET"],
        name="sessions",
    ),
]
