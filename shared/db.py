"""MongoDB access: a bounded client, Beanie initialisation, and JSON views of documents.

Every client built here has finite timeouts, so no call can hang on an unreachable
server. `MongoGate` initialises Beanie lazily and retries until it succeeds, so a
service can start (and answer its health checks) before MongoDB is reachable.

The JSON views are the only way documents leave a service: `public_block` and
`block_summary` are built from an allow-list of fields and can never carry the
solution; `admin_block` (operator-only responses) is the one view that does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient

from shared.documents import DOCUMENT_MODELS, CodeBlock, RoomSession
from shared.settings import Settings

log = logging.getLogger(__name__)

JSON = dict[str, Any]


def mongo_client(settings: Settings, *, appname: str = "coderoom") -> AsyncMongoClient[JSON]:
    """A client with every timeout bounded by `settings.mongodb_timeout_ms` (no I/O yet)."""
    ms = settings.mongodb_timeout_ms
    return AsyncMongoClient(
        settings.mongodb_url,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
        timeoutMS=ms,
        tz_aware=True,
        appname=appname,
    )


def op_timeout(settings: Settings) -> float:
    """Seconds after which one database operation is abandoned (asyncio side)."""
    return settings.mongodb_timeout_ms / 1000 + 0.5


async def init_models(client: AsyncMongoClient[JSON], settings: Settings) -> None:
    """Bind the Beanie documents to `settings.mongodb_db` and create their indexes."""
    async with asyncio.timeout(op_timeout(settings) * 2):
        await init_beanie(
            database=client[settings.mongodb_db], document_models=list(DOCUMENT_MODELS)
        )


async def connect_mongo(settings: Settings) -> AsyncMongoClient[JSON]:
    """A ready client with Beanie initialised; raises (bounded in time) if unreachable."""
    client = mongo_client(settings)
    try:
        await init_models(client, settings)
    except BaseException:
        await client.close()
        raise
    return client


class MongoGate:
    """Initialises Beanie once, lazily, and tells whether it has been done.

    `ensure()` is called before every database operation: it returns at once when
    Beanie is ready, else joins the initialisation in flight (or starts one) and raises
    if it fails, so the caller answers 503 and a later call tries again. Concurrent
    callers share one attempt, so an unreachable server costs each of them one timeout,
    not one per caller. `start()` keeps trying in the background, with backoff, so the
    first request usually finds Beanie ready; `aclose()` stops that.
    """

    def __init__(self, client: AsyncMongoClient[JSON], settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.ready = False
        self._closing = asyncio.Event()
        self._attempt: asyncio.Task[None] | None = None
        self._warm: asyncio.Task[None] | None = None

    async def _initialise(self) -> None:
        await init_models(self.client, self.settings)
        self.ready = True
        log.info("mongodb ready (database %s)", self.settings.mongodb_db)

    async def ensure(self) -> None:
        if self.ready:
            return
        if self._closing.is_set():
            raise ConnectionError("shutting down")
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.create_task(self._initialise(), name="beanie-init")
            # Retrieved here so that an attempt whose waiters all gave up is not
            # reported as "exception never retrieved".
            self._attempt.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(self._attempt)

    async def ping(self) -> None:
        """Round-trip to the server (raises if unreachable)."""
        async with asyncio.timeout(op_timeout(self.settings)):
            await self.client.admin.command("ping")

    def start(self, max_delay: float = 5.0) -> None:
        """Keep initialising in the background until it succeeds."""

        async def warm() -> None:
            delay = 0.2
            while not self.ready and not self._closing.is_set():
                try:
                    await self.ensure()
                except Exception as exc:
                    if self._closing.is_set():
                        return
                    log.warning("mongodb not ready (%r); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, max_delay)

        self._warm = asyncio.create_task(warm(), name="mongo-warm")

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop retrying. An attempt in flight gets `grace` seconds to finish, because
        cancelling pymongo in the middle of a connect can leak its socket."""
        self._closing.set()
        tasks = {t for t in (self._warm, self._attempt) if t is not None and not t.done()}
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def block_summary(doc: CodeBlock) -> JSON:
    """The lobby's view of a block: no template, no solution."""
    return {
        "id": str(doc.id),
        "slug": doc.slug,
        "title": doc.title,
        "language": doc.language,
        "description": doc.description,
    }


def public_block(doc: CodeBlock) -> JSON:
    """A block as a room shows it: the template, never the solution."""
    return {
        **block_summary(doc),
        "template": doc.template,
        "runTimeoutSeconds": doc.run_timeout_seconds,
        "createdAt": _iso(doc.created_at),
        "updatedAt": _iso(doc.updated_at),
    }


def admin_block(doc: CodeBlock) -> JSON:
    """A block as an operator sees it (admin responses only): includes the solution."""
    return {**public_block(doc), "solution": doc.solution}


def room_session_json(doc: RoomSession) -> JSON:
    """An archived room session (admin responses only)."""
    return {
        "id": str(doc.id),
        "blockId": doc.block_id,
        "sessionId": doc.session_id,
        "startedAt": _iso(doc.started_at),
        "endedAt": _iso(doc.ended_at),
        "finalCode": doc.final_code,
        "solved": doc.solved,
        "peakStudents": doc.peak_students,
        "reason": doc.reason,
        "chat": [
            {"id": m.id, "name": m.name, "role": m.role, "text": m.text, "at": _iso(m.at)}
            for m in doc.chat
        ],
        "hints": [
            {
                "id": h.id,
                "name": h.name,
                "text": h.text,
                "line": h.line,
                "at": _iso(h.at),
                "resolvedAt": _iso(h.resolved_at),
            }
            for h in doc.hints
        ],
    }
