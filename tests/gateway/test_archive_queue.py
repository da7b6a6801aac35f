"""The archive queue against a real Redis and the embedded MongoDB, in process.

The record codec is pure; the rest runs the `ArchiveQueue`, the `Drainer` and the
`Archiver` as the gateway does, with a real stream, consumer group and collection.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from redis.asyncio import Redis

from services.gateway.archive import Archiver
from services.gateway.archive_drainer import Drainer
from services.gateway.archive_queue import ArchiveQueue, SessionRecord
from services.gateway.store import Closed
from services.gateway.ydoc import template_update
from shared.db import connect_mongo
from shared.documents import RoomSession
from shared.keys import Keys
from tests.conftest import SettingsFactory
from tests.infra import RedisServer, await_until

Collection = AsyncCollection[dict[str, Any]]


def record(n: int = 0, **overrides: Any) -> SessionRecord:
    values: dict[str, Any] = {
        "session_id": uuid.uuid4().hex,
        "block_id": "b" * 24,
        "started_at": 1_700_000_000_000 + n,
        "ended_at": 1_700_000_060_000 + n,
        "final_code": f"code {n}\n",
        "solved": n % 2 == 0,
        "peak_students": n % 7,
        "reason": "mentor-left",
    }
    values.update(overrides)
    return SessionRecord(**values)


def test_record_round_trip() -> None:
    r = record(3, final_code="é\x00\n" * 10)
    assert SessionRecord.decode(r.encode()) == r
    doc = r.document()
    assert doc["session_id"] == r.session_id
    assert doc["started_at"].timestamp() * 1000 == r.started_at


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b"{}", b'{"session_id": 1}', record(session_id="").encode()],
)
def test_garbage_is_not_a_record(raw: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        SessionRecord.decode(raw)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)  # bytes, as the gateway's client
    yield client
    await client.aclose()


@pytest.fixture
def keys(redis_prefix: str) -> Keys:
    return Keys(redis_prefix)


@pytest.fixture
async def sessions(settings_factory: SettingsFactory) -> AsyncIterator[Collection]:
    client = await connect_mongo(settings_factory())
    yield RoomSession.get_pymongo_collection()
    await client.close()


def provider(collection: Collection) -> Callable[[], Awaitable[Collection]]:
    async def get() -> Collection:
        return collection

    return get


async def drained(drainer: Drainer, queue: ArchiveQueue, archived: int) -> None:
    await await_until(
        lambda: drainer.stats.archived >= archived,
        within=30,
        interval=0.05,
        message=f"{archived} archived",
    )
    assert await queue.depth() == 0


async def test_enqueue_is_bounded_and_counts_refusals(redis: Redis, keys: Keys) -> None:
    queue = ArchiveQueue(redis, keys, max_len=10)
    assert await queue.enqueue([record(i) for i in range(8)]) == (8, 0)
    assert await queue.enqueue([record(i) for i in range(5)]) == (2, 0)
    assert await queue.depth() == 10
    assert int(await redis.get(keys.archive_refused) or 0) == 3


async def test_each_session_archived_once_duplicates_are_success(
    redis: Redis, keys: Keys, sessions: Collection
) -> None:
    queue = ArchiveQueue(redis, keys, max_len=1000)
    records = [record(i) for i in range(250)]
    await sessions.insert_one(records[7].document())  # already archived (a retry landed)
    await queue.enqueue(records)
    await queue.enqueue([records[100]])  # enqueued twice
    drainer = Drainer(
        queue, "c1", provider(sessions), batch=64, claim_idle_seconds=30, write_timeout=30
    )
    drainer.start()
    try:
        await drained(drainer, queue, 251)
    finally:
        await drainer.stop()
    assert drainer.stats.duplicates == 2
    docs = await sessions.find({}, {"_id": 0}).to_list()
    assert sorted(d["session_id"] for d in docs) == sorted(r.session_id for r in records)
    by_id = {d["session_id"]: d for d in docs}
    for r in records:
        assert by_id[r.session_id]["final_code"] == r.final_code
        assert by_id[r.session_id]["solved"] is r.solved
        assert by_id[r.session_id]["peak_students"] == r.peak_students
    assert await queue.pending_of("c1") == 0


async def test_entries_left_pending_by_a_dead_consumer_are_claimed(
    redis: Redis, keys: Keys, sessions: Collection
) -> None:
    queue = ArchiveQueue(redis, keys, max_len=1000)
    records = [record(i) for i in range(30)]
    await queue.enqueue(records)
    await queue.ensure_group()
    taken = await queue.read_new("dead", 100, block_ms=100)  # then killed: never acked
    assert len(taken) == 30
    drainer = Drainer(
        queue, "alive", provider(sessions), batch=100, claim_idle_seconds=0.3, write_timeout=30
    )
    drainer.start()
    try:
        await drained(drainer, queue, 30)
    finally:
        await drainer.stop()
    assert await queue.pending_of("dead") == 0
    assert await sessions.count_documents({}) == 30


async def test_mongo_failing_keeps_entries_until_it_answers(
    redis: Redis, keys: Keys, sessions: Collection
) -> None:
    queue = ArchiveQueue(redis, keys, max_len=1000)
    up = asyncio.Event()

    async def flaky() -> Collection:
        if not up.is_set():
            raise ConnectionError("MongoDB is away")
        return sessions

    await queue.enqueue([record(i) for i in range(20)])
    drainer = Drainer(queue, "c1", flaky, batch=100, claim_idle_seconds=30, write_timeout=30)
    drainer.MAX_DELAY = 0.2
    drainer.start()
    try:
        await await_until(lambda: drainer.stats.failures >= 3, within=30, message="retries")
        assert await queue.depth() == 20
        assert drainer.stats.failing_since is not None
        assert "failing_for_seconds" in drainer.stats.details()
        up.set()
        await drained(drainer, queue, 20)
    finally:
        await drainer.stop()
    assert await sessions.count_documents({}) == 20
    assert drainer.stats.failing_since is None


async def test_a_full_queue_writes_to_mongo_directly(
    redis: Redis, keys: Keys, sessions: Collection
) -> None:
    queue = ArchiveQueue(redis, keys, max_len=10)
    await queue.enqueue([record(i) for i in range(10)])
    archiver = Archiver(queue, provider(sessions), write_timeout=30)
    closed = Closed(
        session="s-" + uuid.uuid4().hex,
        opened_at_ms=1_700_000_000_000,
        solved=True,
        peak_students=3,
        mentor="m1",
        snapshot=template_update("hello"),
        entries=[],
    )
    archiver.archive("c" * 24, closed, "mentor-left")
    await asyncio.sleep(0)  # the tick ends: the enqueue starts
    await archiver.wait(10)
    doc = await sessions.find_one({"session_id": closed.session})
    assert doc is not None
    assert (doc["final_code"], doc["solved"], doc["peak_students"]) == ("hello", True, 3)
    assert await queue.depth() == 10
    assert int(await redis.get(keys.archive_refused) or 0) == 1


async def test_closed_rooms_are_enqueued_in_order(redis: Redis, keys: Keys) -> None:
    queue = ArchiveQueue(redis, keys, max_len=100)

    async def no_mongo() -> Collection:
        raise AssertionError("not needed")

    archiver = Archiver(queue, no_mongo, write_timeout=1)
    for i in range(5):
        closed = Closed(f"s{i}", 0, False, 1, "m", template_update(""), [])
        archiver.archive("d" * 24, closed, "mentor-left")
    await archiver.wait(10)
    assert await queue.depth() == 5
    entries: list[Any] = list(await redis.xrange(keys.archive_queue) or [])
    assert [SessionRecord.decode(f[b"r"]).session_id for _, f in entries] == [
        f"s{i}" for i in range(5)
    ]


class SlowCollection:
    """A collection whose writes take `delay` seconds (a MongoDB under a storm)."""

    def __init__(self, collection: Collection, delay: float) -> None:
        self.collection = collection
        self.delay = delay

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool) -> Any:
        await asyncio.sleep(self.delay)
        return await self.collection.insert_many(docs, ordered=ordered)


async def test_a_slow_write_is_not_mistaken_for_a_dead_consumer(
    redis: Redis, keys: Keys, sessions: Collection
) -> None:
    queue = ArchiveQueue(redis, keys, max_len=1000)
    slow = SlowCollection(sessions, delay=1.5)

    async def get_slow() -> Any:
        return slow

    await queue.enqueue([record(i) for i in range(40)])
    drainers = [
        Drainer(queue, name, get_slow, batch=20, claim_idle_seconds=0.3, write_timeout=30)
        for name in ("a", "b")
    ]
    for d in drainers:
        d.start()
    try:
        await await_until(
            lambda: sum(d.stats.archived for d in drainers) >= 40, within=30, message="40"
        )
    finally:
        for d in drainers:
            await d.stop()
    assert sum(d.stats.duplicates for d in drainers) == 0  # nobody wrote another's batch
    assert await sessions.count_documents({}) == 40


async def test_the_group_is_made_once_and_again_after_redis_lost_it(
    redis: Redis, keys: Keys, sessions: Collection
) -> None:
    """Idle, the drainer does not ask for its consumer group on every poll (that was a
    BUSYGROUP error a second per gateway); when Redis loses the stream and its group (a
    restart), the next read fails with NOGROUP and the group is made again."""
    queue = ArchiveQueue(redis, keys, max_len=1000)
    drainer = Drainer(
        queue,
        "c1",
        provider(sessions),
        batch=8,
        claim_idle_seconds=30,
        write_timeout=30,
        block_ms=50,  # poll fast: many idle loops in the window below
    )
    drainer.start()
    try:
        await queue.enqueue([record(i) for i in range(3)])
        await drained(drainer, queue, 3)
        before = await busygroup_errors(redis)
        await asyncio.sleep(0.5)  # some ten idle polls
        assert await busygroup_errors(redis) == before
        await redis.delete(queue.key)  # the stream and its group are gone
        await queue.enqueue([record(i) for i in range(3, 6)])  # a new stream, no group
        await drained(drainer, queue, 6)
    finally:
        await drainer.stop()
    assert drainer.stats.failures >= 1  # the NOGROUP read, then recovered


async def busygroup_errors(redis: Redis) -> int:
    """Replies the server gave as a BUSYGROUP error (INFO errorstats)."""
    stats = await redis.info("errorstats")
    entry = stats.get("errorstat_BUSYGROUP", {})
    return int(entry.get("count", 0)) if isinstance(entry, dict) else 0
