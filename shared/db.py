"""MongoDB access: a bounded client, Beanie initialisation, and JSON views of documents.

Every client built here has finite timeouts, so no call can hang on an unreachable
server. `MongoGate` initialises Beanie lazily and retries until it succeeds, so a
service can start (and answer its health checks) before MongoDB is reachable.

The JSON views are the only way documents leave a service: `public_block` and
`block_summary` are built from an allow-list of fields and can never carry the
solution; `admin_block` (operator-only responses) is the one view that does. Their
shapes are the models of `shared.views`, which also give the api its OpenAPI schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from beanie import init_beanie
from pymongo import AsyncMongoClient

from shared.documents import DOCUMENT_MODELS, CodeBlock, RoomSession
from shared.settings import Settings
from shared.views import AdminBlock, Block, BlockSummary, RoomSessionView

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


BLOCK_COPY_MISSING_MS = 5000
"""How long a Redis block copy remembers that a block does not exist."""


def encode_block_copy(parts: tuple[str, str] | None) -> bytes:
    """The Redis copy of a block for room opens (`Keys.block_copy`): its (template,
    solution), or None for a block MongoDB does not have. Written by the api and the
    gateways, read by the gateways; this and `decode_block_copy` are its only codec."""
    if parts is None:
        return b'{"missing":true}'
    return orjson.dumps({"template": parts[0], "solution": parts[1]})


def decode_block_copy(raw: bytes | str | None) -> tuple[bool, tuple[str, str] | None]:
    """(usable, (template, solution) or None if the block does not exist); a missing
    or malformed copy is not usable (the caller asks MongoDB)."""
    if raw is None:
        return False, None
    try:
        data = orjson.loads(raw)
        if data.get("missing") is True:
            return True, None
        template, solution = data["template"], data["solution"]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return False, None
    if not isinstance(template, str) or not isinstance(solution, str):
        return False, None
    return True, (template, solution)


def block_summary(doc: CodeBlock) -> JSON:
    """The lobby's view of a block: no template, no solution."""
    return BlockSummary.of(doc).body()


def public_block(doc: CodeBlock) -> JSON:
    """A block as a room shows it: the template, never the solution."""
    return Block.of(doc).body()


def admin_block(doc: CodeBlock) -> JSON:
    """A block as an operator sees it (admin responses only): includes the solution."""
    return AdminBlock.of(doc).body()


def room_session_json(doc: RoomSession) -> JSON:
    """An archived room session (admin responses only)."""
    return RoomSessionView.of(doc).body()
