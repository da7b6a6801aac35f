"""Code blocks as the gateway needs them: template and solution, cached at two levels.

The gateway reads a block only when a room is entered, never per keystroke. A block is
kept in memory for ``BLOCK_CACHE_SECONDS`` (so a room keeps working, and people keep
joining it, while MongoDB is briefly unreachable); behind that is a copy in Redis next
to the room's keys, written by whoever read the block from MongoDB last (another
gateway, the api). The misses of one event-loop tick are looked up together: one pipeline of GETs,
then one ``$in`` query for what Redis lacks, and a block being looked up is never looked
up twice at once, by this process (single flight) or by the fleet (a load lock next to
the copy: whoever holds it reads MongoDB, the others wait for its copy). A burst of room
opens thus costs at most one MongoDB read per block, in batches (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from bson import ObjectId
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.metrics import GatewayMetrics
from shared.db import (
    BLOCK_COPY_MISSING_MS,
    MongoGate,
    decode_block_copy,
    encode_block_copy,
    op_timeout,
)
from shared.documents import CodeBlock, is_block_id
from shared.keys import Keys
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_IDS_PER_QUERY = 50
MAX_CACHED = 10000
COPY_POLL = 0.025  # seconds between looks for the copies another gateway is loading


class BlockUnavailable(Exception):
    """MongoDB could not be asked in time."""


@dataclass(frozen=True, slots=True)
class Block:
    id: str
    template: str
    solution: str


class BlockSource:
    def __init__(
        self,
        gate: MongoGate,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        metrics: GatewayMetrics | None = None,
        owner: str = "",
    ) -> None:
        self._gate = gate
        self._owner = owner or "gateway"
        self._redis = redis
        self._keys = keys
        self._ttl = settings.block_cache_seconds
        self._timeout = op_timeout(settings)
        self._cache: dict[str, tuple[float, Block | None]] = {}
        self._inflight: dict[str, asyncio.Future[Block | None]] = {}
        self._wanted: list[str] = []
        self._loader: asyncio.Task[None] | None = None
        self._metrics = metrics

    @staticmethod
    def valid_id(block_id: str) -> bool:
        return is_block_id(block_id)

    async def get(self, block_id: str) -> Block | None:
        """The block, None if there is no such block; raises BlockUnavailable."""
        if not self.valid_id(block_id):
            return None
        cached = self._cache.get(block_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        future = self._inflight.get(block_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[block_id] = future
            self._wanted.append(block_id)
            if self._loader is None or self._loader.done():
                self._loader = asyncio.create_task(self._load_wanted(), name="block-loader")
        try:
            return await asyncio.shield(future)
        except BlockUnavailable:
            if cached is not None and cached[1] is not None:
                return cached[1]  # stale but better than refusing a live room
            raise

    async def _load_wanted(self) -> None:
        """The one loader of this process: Redis copies first (one pipeline of GETs for every block
        wanted), then MongoDB, one ``$in`` query of a few dozen blocks at a time (the
        embedded server answers a few big queries far slower than many small ones in
        turn). If MongoDB fails, every block still wanted fails at once: nobody queues
        behind a server that is away."""
        await asyncio.sleep(0)  # the rest of this tick's misses join the first batch
        try:
            await self._load_loop()
        except BaseException as exc:  # never leave a join waiting on a dead loader
            self._fail([*self._inflight], exc)
            raise

    async def _load_loop(self) -> None:
        while self._wanted:
            ids, self._wanted = self._wanted, []
            found = await self._from_redis(ids)
            self._settle(found)
            mine, theirs = await self._claim([i for i in ids if i not in found])
            await self._read_mongo(mine)
            if theirs:
                await self._read_mongo(await self._await_copies(theirs))

    async def _read_mongo(self, ids: list[str]) -> None:
        for start in range(0, len(ids), MAX_IDS_PER_QUERY):
            chunk = ids[start : start + MAX_IDS_PER_QUERY]
            try:
                loaded = await self._from_mongo(chunk)
            except Exception as exc:
                rest, self._wanted = ids[start:] + self._wanted, []
                log.warning("loading %d blocks failed: %r", len(rest), exc)
                self._fail(rest, exc)
                await self._unlock(ids[start:])
                return
            self._settle(loaded)
            await self._copy_to_redis(loaded)

    async def _claim(self, ids: list[str]) -> tuple[list[str], list[str]]:
        """Take the fleet-wide load lock of each block: (ours to read from MongoDB,
        those another gateway is reading now). Without copies or Redis: all ours.

        The copies are read again after the locks, in the same pipeline: a copy written
        between our first look and the lock (its reader released the lock) is used."""
        ttl_ms = int(self._timeout * 1000)
        if not ids or self._ttl <= 0:
            return ids, []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for block_id in ids:
                    pipe.set(self._keys.block_load_lock(block_id), self._owner, nx=True, px=ttl_ms)
                for block_id in ids:
                    pipe.get(self._keys.block_copy(block_id))
                replies = await pipe.execute()
        except RedisError as exc:
            log.warning("block load locks unavailable (%s); reading MongoDB", exc)
            return ids, []
        found: dict[str, Block | None] = {}
        mine: list[str] = []
        theirs: list[str] = []
        for block_id, locked, raw in zip(ids, replies, replies[len(ids) :], strict=False):
            ok, parts = decode_block_copy(raw)
            if ok:
                found[block_id] = Block(block_id, *parts) if parts is not None else None
            (mine if locked else theirs).append(block_id)
        self._settle(found)
        await self._unlock([i for i in mine if i in found])
        return [i for i in mine if i not in found], [i for i in theirs if i not in found]

    async def _await_copies(self, ids: list[str]) -> list[str]:
        """Wait for the copies other gateways are loading; those whose lock went (the
        reader failed) or timed out without a copy are returned, to be read here."""
        deadline = time.monotonic() + self._timeout
        waiting, given_up = ids, []
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(COPY_POLL)
            try:
                # GETs in a pipeline, not MGET: each block's keys have its room's hash
                # tag (another slot on a cluster).
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in [self._keys.block_copy(i) for i in waiting] + [
                        self._keys.block_load_lock(i) for i in waiting
                    ]:
                        pipe.get(key)
                    raws = await pipe.execute()
            except RedisError:
                break
            found: dict[str, Block | None] = {}
            for n, block_id in enumerate(waiting):
                ok, parts = decode_block_copy(raws[n])
                if ok:
                    found[block_id] = Block(block_id, *parts) if parts is not None else None
                elif raws[len(waiting) + n] is None:
                    given_up.append(block_id)
            self._settle(found)
            waiting = [i for i in waiting if i not in found and i not in given_up]
        return given_up + waiting

    def _settle(self, found: dict[str, Block | None]) -> None:
        now = time.monotonic()
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        for block_id, block in found.items():
            self._cache[block_id] = (now, block)
            future = self._inflight.pop(block_id, None)
            if future is not None and not future.done():
                future.set_result(block)

    def _fail(self, ids: list[str], error: BaseException) -> None:
        for block_id in ids:
            future = self._inflight.pop(block_id, None)
            if future is not None and not future.done():
                future.set_exception(BlockUnavailable(repr(error)))
                future.exception()  # retrieved: nobody may be waiting any more

    async def _from_redis(self, ids: list[str]) -> dict[str, Block | None]:
        try:
            # GETs in one non-transactional pipeline, not MGET: the copies carry their
            # rooms' hash tags (other slots on a cluster; one round trip per shard).
            async with self._redis.pipeline(transaction=False) as pipe:
                for block_id in ids:
                    pipe.get(self._keys.block_copy(block_id))
                raws = await pipe.execute()
        except RedisError as exc:
            log.warning("block copies unreadable (%s); asking MongoDB", exc)
            return {}
        out: dict[str, Block | None] = {}
        for block_id, raw in zip(ids, raws, strict=True):
            ok, parts = decode_block_copy(raw)
            if ok:
                out[block_id] = Block(block_id, *parts) if parts is not None else None
        return out

    async def _from_mongo(self, ids: list[str]) -> dict[str, Block | None]:
        async with asyncio.timeout(self._timeout):
            await self._gate.ensure()
            cursor = CodeBlock.get_pymongo_collection().find(
                {"_id": {"$in": [ObjectId(i) for i in ids]}},
                {"template": 1, "solution": 1},
            )
            docs = await cursor.to_list()
        if self._metrics is not None:
            self._metrics.block_mongo_reads += len(ids)
        out: dict[str, Block | None] = dict.fromkeys(ids)
        for doc in docs:
            block_id = str(doc["_id"])
            out[block_id] = Block(
                block_id, str(doc.get("template", "")), str(doc.get("solution", ""))
            )
        return out

    async def _copy_to_redis(self, blocks: dict[str, Block | None]) -> None:
        ttl_ms = int(self._ttl * 1000)
        if ttl_ms <= 0 or not blocks:
            return
        with contextlib.suppress(RedisError):
            async with self._redis.pipeline(transaction=False) as pipe:
                for block_id, block in blocks.items():
                    parts = (block.template, block.solution) if block is not None else None
                    px = ttl_ms if block is not None else min(ttl_ms, BLOCK_COPY_MISSING_MS)
                    pipe.set(self._keys.block_copy(block_id), encode_block_copy(parts), px=px)
                    pipe.delete(self._keys.block_load_lock(block_id))
                await pipe.execute()

    async def _unlock(self, ids: list[str]) -> None:
        """Reading failed: let the others waiting for these blocks try for themselves."""
        if ids:
            with contextlib.suppress(RedisError):
                await self._redis.delete(*(self._keys.block_load_lock(i) for i in ids))
