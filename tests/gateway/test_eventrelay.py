"""services/gateway/eventrelay.py against a real redis-server: the one script shape that
keeps a session's events in a bounded list and publishes them, and the relay shell as
runs and chat use it (budget, publish, the joiner's greeting, the archive)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from services.gateway.channel import CHAT_KIND, RUN_KIND
from services.gateway.chat import CHAT_SCRIPT, ChatRelay
from services.gateway.eventrelay import KEPT_TTL_SECONDS, keep_and_publish
from services.gateway.room import Limits, RoomCore
from services.gateway.runs import RUN_SCRIPT, RUNS_KEPT, RunRelay
from shared import protocol
from shared.keys import Keys, RoomKeys
from shared.ywire import encode_var_bytes
from tests.infra import RedisServer, scaled, unique_name

BLOCK = "b" * 24


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)  # bytes, as the gateway reads them
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(unique_name("e"))


async def run_script(
    redis: Redis, script: str, room: RoomKeys, target: str, *args: str | int
) -> int:
    return int(await redis.eval(script, 3, room.state, target, room.channel, *args))


async def published(pubsub: PubSub, n: int) -> list[bytes]:
    """The next ``n`` messages of the subscription (redis-py answers None for the
    subscription's own confirmation, even when told to ignore it: read on)."""
    out: list[bytes] = []
    deadline = time.monotonic() + scaled(5)
    while len(out) < n and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            out.append(message["data"])
    return out


async def test_the_session_s_events_are_kept_bounded_and_published(
    redis: Redis, keys: Keys
) -> None:
    room = keys.room(BLOCK)
    await redis.hset(room.state, "session", "s1")
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(room.channel)
        for i in range(RUNS_KEPT + 3):
            assert await run_script(
                redis, RUN_SCRIPT, room, room.runs, "s1", f"e{i}", RUNS_KEPT, 60
            )
        sent = await published(pubsub, RUNS_KEPT + 3)
    assert sent == [RUN_KIND + f"e{i}".encode() for i in range(RUNS_KEPT + 3)]
    kept = await redis.lrange(room.runs, 0, -1)
    assert kept == [f"s1\x00e{i}".encode() for i in range(3, RUNS_KEPT + 3)]
    assert 0 < await redis.ttl(room.runs) <= 60


async def test_another_session_s_list_is_replaced_and_a_stale_session_writes_nothing(
    redis: Redis, keys: Keys
) -> None:
    room = keys.room(BLOCK)
    await redis.hset(room.state, "session", "s1")
    await run_script(redis, RUN_SCRIPT, room, room.runs, "s1", "old", 5, 60)
    await redis.hset(room.state, "session", "s2")
    assert await run_script(redis, RUN_SCRIPT, room, room.runs, "s1", "late", 5, 60) == 0
    assert await redis.lrange(room.runs, 0, -1) == [b"s1\x00old"]
    assert await run_script(redis, RUN_SCRIPT, room, room.runs, "s2", "new", 5, 60) == 1
    assert await redis.lrange(room.runs, 0, -1) == [b"s2\x00new"]


async def test_an_event_kept_nowhere_is_published_only(redis: Redis, keys: Keys) -> None:
    room = keys.room(BLOCK)
    await redis.hset(room.state, "session", "s1")
    script = keep_and_publish(CHAT_KIND)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(room.channel)
        assert await run_script(redis, script, room, room.hints, "s1", "follow", 0, 60) == 1
        assert await published(pubsub, 1) == [CHAT_KIND + b"follow"]
    assert not await redis.exists(room.hints)


async def test_a_resolution_needs_its_hint_kept_and_unresolved(redis: Redis, keys: Keys) -> None:
    room = keys.room(BLOCK)
    await redis.hset(room.state, "session", "s1")
    hint = orjson.dumps({"type": "hint", "hint": {"id": "h1", "text": "look"}}).decode()
    done = orjson.dumps({"type": "hint-resolved", "id": "h1", "at": 5}).decode()

    async def chat(event: str, resolving: str) -> int:
        return await run_script(redis, CHAT_SCRIPT, room, room.hints, "s1", event, 9, 60, resolving)

    assert await chat(done, "h1") == 0  # no such hint yet
    assert await chat(hint, "") == 1
    assert await chat(done, "h1") == 1
    assert await chat(done, "h1") == 0  # resolved already
    assert await redis.lrange(room.hints, 0, -1) == [f"s1\x00{e}".encode() for e in (hint, done)]


def control(message: dict[str, Any]) -> bytes:
    return b"\x64" + encode_var_bytes(orjson.dumps(message))


class Spawned:
    """The relays' ``spawn``: what they start, awaited when the test says."""

    def __init__(self) -> None:
        self.coros: list[Coroutine[Any, Any, None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coros.append(coro)

    async def run(self) -> None:
        coros, self.coros = self.coros, []
        await asyncio.gather(*coros)


def room_with(member_id: str, role: protocol.Role) -> RoomCore:
    core = RoomCore(BLOCK, "s1", "s1", None, Limits())
    core.add_member(member_id, "client-1", role, 0.0)
    return core


def event_of(frame: bytes) -> dict[str, Any]:
    return dict(protocol.decode_control(frame))


async def test_a_run_goes_through_the_shell_to_a_joiner(redis: Redis, keys: Keys) -> None:
    await redis.hset(keys.room(BLOCK).state, "session", "s1")
    spawned = Spawned()
    relay = RunRelay(redis, keys, spawned)
    core = room_with("g/1", "student")
    result = {"type": "run-result", "language": "python", "state": "ok"}
    frame = control({**result, "durationMs": 3, "output": "42\n"})
    assert relay.receive(core, "g/1", frame, 1.0).close is None
    await spawned.run()
    greeted: list[bytes] = []
    relay.greet(BLOCK, "s1", greeted.append)
    relay.greet(BLOCK, "s0", greeted.append)  # another session's joiner gets nothing
    await spawned.run()
    [runs] = [event_of(f) for f in greeted]
    assert runs["type"] == "runs" and [r["output"] for r in runs["runs"]] == ["42\n"]
    assert runs["runs"][0]["clientId"] == "client-1" and runs["runs"][0]["name"] == "Guest"
    assert 0 < await redis.ttl(keys.room(BLOCK).runs) <= KEPT_TTL_SECONDS


async def test_chat_and_hints_go_through_the_shell_to_the_archive(redis: Redis, keys: Keys) -> None:
    await redis.hset(keys.room(BLOCK).state, "session", "s1")
    spawned = Spawned()
    relay = ChatRelay(redis, keys, spawned)
    core = room_with("g/1", "mentor")
    hint = {"type": "hint", "text": "line 2", "anchor": "AZoFAwA=", "line": 2}
    for message in ({"type": "chat", "text": "hi"}, hint, {"type": "follow-me", "on": True}):
        effects = relay.receive(core, "g/1", control(message), 1.0)
        assert effects.close is None and not effects.reply
    await spawned.run()
    archive = await relay.archive(BLOCK, "s1")
    assert [m["text"] for m in archive["messages"]] == ["hi"]
    [kept] = archive["hints"]
    assert (kept["text"], kept["resolvedAt"]) == ("line 2", None)
    resolve = {"type": "hint-resolve", "id": kept["id"]}
    assert relay.receive(core, "g/1", control(resolve), 2.0).close is None
    await spawned.run()
    [kept] = (await relay.archive(BLOCK, "s1"))["hints"]
    assert kept["resolvedAt"] is not None
    assert await redis.llen(keys.room(BLOCK).hints) == 2  # follow-me is never kept
