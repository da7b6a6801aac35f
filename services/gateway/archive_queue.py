"""The archive queue: closed sessions wait in a Redis stream until MongoDB holds them.

Design, keys and failure cases: docs/redis.md ("The archive queue"). This module has
the record's codec and the MongoDB write (pure or nearly), the enqueue script and the
Redis side of the queue (`ArchiveQueue`); the drainer that moves batches from the stream
to MongoDB is `services/gateway/archive_drainer.py`.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pymongo
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from redis import __version__ as redis_version
from redis.asyncio import Redis, RedisCluster
from redis.driver_info import DriverInfo
from redis.exceptions import ResponseError

from shared.documents import ChatRecord, HintRecord
from shared.keys import ARCHIVE_GROUP, Keys
from shared.redisconn import url_at

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000  # MongoDB's error code for a unique-index violation
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One closed session, as it travels through the queue (times in ms since the epoch)."""

    session_id: str
    block_id: str
    started_at: int
    ended_at: int
    final_code: str
    solved: bool
    peak_students: int
    reason: str
    replay: str = ""  # base64 of the compressed replay (shared/replay.py), "" if none
    # The room's chat messages and mentor hints as the chat events carry them (oldest first).
    chat: list[Json] = field(default_factory=list)
    hints: list[Json] = field(default_factory=list)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> SessionRecord:
        """Raises ValueError/TypeError on anything that is not a record we wrote."""
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        record = cls(**data)
        if not isinstance(record.session_id, str) or not record.session_id:
            raise ValueError("no session id")
        return record

    def document(self) -> Json:
        """The `RoomSession` document (collection ``room_sessions``), without ``_id``."""
        return {
            "block_id": self.block_id,
            "session_id": self.session_id,
            "started_at": datetime.fromtimestamp(self.started_at / 1000, UTC),
            "ended_at": datetime.fromtimestamp(self.ended_at / 1000, UTC),
            "final_code": self.final_code,
            "solved": self.solved,
            "peak_students": self.peak_students,
            "reason": self.reason,
            "chat": [ChatRecord.from_event(m).model_dump() for m in self.chat],
            "hints": [HintRecord.from_event(h).model_dump() for h in self.hints],
            **self._replay_fields(),
        }

    def _replay_fields(self) -> Json:
        if not self.replay:
            return {}
        blob = base64.b64decode(self.replay)
        return {"replay": blob, "replay_bytes": len(blob)}


@dataclass(slots=True)
class WriteOutcome:
    """What one insert_many did: per record index, archived (new or duplicate) or not."""

    inserted: int = 0
    duplicates: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # index -> error message


async def insert_sessions(
    collection: AsyncCollection[Json], records: list[SessionRecord], seconds: float
) -> WriteOutcome:
    """One unordered insert_many; a duplicate session id (code 11000) counts as archived.

    Raises when the write as a whole failed (unreachable, timed out): nothing is known
    to be archived then, and the caller retries the batch."""
    if not records:
        return WriteOutcome()
    docs = [r.document() for r in records]
    try:
        with pymongo.timeout(seconds):
            result = await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        if details.get("writeConcernErrors"):
            raise
        outcome = WriteOutcome(inserted=int(details.get("nInserted", 0)))
        for error in details.get("writeErrors", []):
            if error.get("code") == DUPLICATE_KEY:
                outcome.duplicates += 1
            else:
                outcome.failed[int(error["index"])] = str(error.get("errmsg", error))
        return outcome
    return WriteOutcome(inserted=len(result.inserted_ids))


# KEYS: queue, refused counter. ARGV: max length, then encoded records.
# Appends records while the stream is shorter than the bound; returns how many it took
# (the first N); counts the rest as refused. Never trims: trimming would drop records.
ENQUEUE = """
local n = redis.call('XLEN', KEYS[1])
local max = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV do
  if n + added >= max then break end
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[i])
  added = added + 1
end
local refused = #ARGV - 1 - added
if refused > 0 then redis.call('INCRBY', KEYS[2], refused) end
return added
"""


class ArchiveQueue:
    """The Redis side of the queue: enqueue, read, claim, acknowledge (one slot)."""

    def __init__(self, redis: Redis, keys: Keys, max_len: int, url: str = "") -> None:
        self.redis = redis
        self.key = keys.archive_queue
        self.refused_key = keys.archive_refused
        self.max_len = max_len
        self._enqueue = redis.register_script(ENQUEUE)
        self._url = url  # REDIS_URL: scheme and credentials for a cluster node's client
        self._nodes: dict[str, Redis] = {}

    async def _confirming(self) -> Redis:
        """The client whose one connection takes the entries and then ``WAIT``: WAIT
        counts the writes of its own connection. On one server that is the client; on
        a cluster, a plain client of the primary that owns the queue's slot (a cluster
        client would send the keyless WAIT anywhere)."""
        cluster: object = self.redis  # typed as Redis; redis_client may give a cluster
        if not isinstance(cluster, RedisCluster):
            return self.redis
        await cluster.initialize()  # the slot map (a no-op once it is known)
        node = cluster.get_node_from_key(self.key)
        if node is None:
            raise ConnectionError(f"no cluster node owns {self.key}")
        client = self._nodes.get(node.name)
        if client is None:
            client = Redis.from_url(
                url_at(self._url, node.host, int(node.port)),
                driver_info=DriverInfo(lib_version=redis_version),
            )
            self._nodes[node.name] = client
        return client

    async def forget_nodes(self) -> None:
        """After an error: the slot may have moved (failover); ask the map again."""
        nodes, self._nodes = self._nodes, {}
        for client in nodes.values():
            await client.aclose()

    async def enqueue(
        self, records: list[SessionRecord], replicas: int = 0, wait_ms: int = 1000
    ) -> tuple[int, int]:
        """Append records: how many were taken (the rest were refused: queue full), and
        how many replicas confirmed holding them (``WAIT replicas wait_ms`` on the same
        connection, in the same round trip; 0 without waiting when ``replicas`` is 0)."""
        keys = [self.key, self.refused_key]
        args: list[bytes | int] = [self.max_len, *(r.encode() for r in records)]
        if replicas <= 0:
            return int(await self._enqueue(keys=keys, args=args)), 0
        async with (await self._confirming()).pipeline(transaction=False) as pipe:
            await self._enqueue(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", replicas, wait_ms)
            taken, acked = await pipe.execute()
        return int(taken), int(acked)

    async def connected_replicas(self) -> int:
        """The replicas the queue's node reports connected (``INFO replication``); 0 if
        the server refuses INFO (a managed Redis may): then nothing is waited for."""
        try:
            info = await (await self._confirming()).info("replication")
        except ResponseError as exc:
            log.warning("INFO replication refused (%s): archive entries are not confirmed", exc)
            return 0
        return int(info.get("connected_slaves", 0))

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.key, ARCHIVE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_own_pending(self, consumer: str, count: int) -> list[tuple[bytes, Any]]:
        """Entries delivered to this consumer and not acknowledged (re-delivered)."""
        reply = await self.redis.xreadgroup(ARCHIVE_GROUP, consumer, {self.key: "0"}, count=count)
        return _entries(reply)

    async def claim_idle(self, consumer: str, idle_ms: int, count: int) -> list[tuple[bytes, Any]]:
        """Entries other consumers left pending for more than idle_ms, now ours."""
        reply = await self.redis.xautoclaim(
            self.key, ARCHIVE_GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=count
        )
        return [(eid, fields) for eid, fields in reply[1] if eid is not None]

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[bytes, Any]]:
        reply = await self.redis.xreadgroup(
            ARCHIVE_GROUP, consumer, {self.key: ">"}, count=count, block=block_ms
        )
        return _entries(reply)

    async def acknowledge(self, ids: list[bytes]) -> int:
        """XACK + XDEL (one MULTI); returns the queue depth after."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if ids:
                pipe.xack(self.key, ARCHIVE_GROUP, *ids)
                pipe.xdel(self.key, *ids)
            pipe.xlen(self.key)
            replies = await pipe.execute()
        return int(replies[-1])

    async def keep(self, consumer: str, ids: list[bytes]) -> None:
        """Reset the idle time of entries this consumer is still writing (XCLAIM to
        itself, JUSTID), so that a slow write is not mistaken for a dead consumer."""
        if ids:
            await self.redis.xclaim(
                self.key,
                ARCHIVE_GROUP,
                consumer,
                min_idle_time=0,
                message_ids=list[int | bytes | str | memoryview](ids),
                justid=True,
            )

    async def depth(self) -> int:
        return int(await self.redis.xlen(self.key))

    async def forget_idle_consumers(self, me: str, idle_ms: int) -> None:
        """Delete consumers with nothing pending, idle for idle_ms (dead gateways)."""
        for info in await self.redis.xinfo_consumers(self.key, ARCHIVE_GROUP):
            name = info["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != me and int(info["pending"]) == 0 and int(info["idle"]) > idle_ms:
                await self.redis.xgroup_delconsumer(self.key, ARCHIVE_GROUP, name)

    async def pending_of(self, consumer: str) -> int:
        for info in await self.redis.xinfo_consumers(self.key, ARCHIVE_GROUP):
            name = info["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name == consumer:
                return int(info["pending"])
        return 0

    async def drop_consumer(self, consumer: str) -> None:
        await self.redis.xgroup_delconsumer(self.key, ARCHIVE_GROUP, consumer)


def _entries(reply: Any) -> list[tuple[bytes, Any]]:
    """The entries of an XREADGROUP reply on one stream (list or RESP3 dict form)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return list(streams[0][0]) if streams and streams[0] else []
    return list(reply[0][1])
