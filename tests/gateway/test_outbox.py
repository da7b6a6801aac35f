"""services.gateway.outbox against a real redis-server: a batch Redis refuses because it
lost the room is held until ``release`` when the room says so, dropped otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.gateway.outbox import Outbox
from services.gateway.resp import Endpoint
from services.gateway.shards import ShardRouter
from services.gateway.store import RoomStore
from services.gateway.ydoc import template_update
from shared.keys import Keys
from shared.redisconn import PLAIN, HotPath, SlotMap
from tests.infra import RedisServer, await_until, unique_name

Published = tuple[str, str, int]


class Room:
    """The outbox's listener, as the compactor is in the gateway."""

    def __init__(self, hold: bool) -> None:
        self.hold = hold
        self.published: list[Published] = []
        self.lost: list[tuple[str, str, bool]] = []

    def on_published(self, block: str, session: str, seq: int, size: int, since: int) -> None:
        self.published.append((block, session, seq))

    def on_lost(self, block: str, session: str, closed: bool) -> bool:
        self.lost.append((block, session, closed))
        return self.hold


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RoomStore]:
    client = Redis.from_url(redis_server.url)
    yield RoomStore(client, Keys(unique_name("o")))
    await client.aclose()


async def _open(store: RoomStore, session: str) -> None:
    await store.join(
        "b",
        "g/1",
        watcher=False,
        client_id="c",
        claimed_session="",
        now_ms=1,
        cap=5,
        new_session=session,
        template=template_update(""),
        grace_ms=10_000,
    )


async def _one_server() -> SlotMap:
    return SlotMap.single()


@pytest.mark.parametrize("hold", [True, False])
async def test_a_batch_for_a_lost_room_is_held_or_dropped(
    store: RoomStore, redis_server: RedisServer, hold: bool
) -> None:
    room = Room(hold)
    writer = ShardRouter(Endpoint.from_url(redis_server.url), HotPath(_one_server, PLAIN))
    outbox = Outbox(writer, store, "gw", room.on_published, room.on_lost)
    session = "s" * 24
    try:
        await writer.connect()
        outbox.update("b", session, template_update("x"))  # no such room in Redis yet
        await await_until(lambda: room.lost, 5, message="the refusal")
        assert room.lost == [("b", session, False)] and room.published == []
        await _open(store, session)  # the room is back (a resync would do this)
        outbox.release("b")
        if hold:
            await await_until(lambda: room.published, 5, message="the held batch")
            assert room.published == [("b", session, 1)]
        else:
            assert await outbox.drained(1.0)  # nothing left to send
            assert room.published == []
        loaded = await store.load("b")
        assert not isinstance(loaded, str) and len(loaded.entries) == (1 if hold else 0)
    finally:
        await outbox.stop()
