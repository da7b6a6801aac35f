"""The room's Lua scripts against a real redis-server, and against the embedded stand-in
(fakeredis over TCP, what ``make run`` uses when no redis-server is installed)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from pycrdt import Doc, Text
from redis.asyncio import Redis

from services.gateway import channel
from services.gateway.scripts import PUBLISH
from services.gateway.store import Closed, Joined, Loaded, RoomStore
from services.gateway.ydoc import template_update
from shared.keys import Keys
from tests.infra import EmbeddedRedis, RedisServer, scaled, unique_name
from tests.yclient import text_update


@pytest.fixture(scope="module")
def fake_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(tmp_path_factory.mktemp("fakeredis")).start() as server:
        yield server.url


@pytest.fixture(params=["redis-server", "fakeredis"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[RoomStore]:
    url = (
        redis_server.url
        if request.param == "redis-server"
        else request.getfixturevalue("fake_redis_url")
    )
    client = Redis.from_url(url)
    yield RoomStore(client, Keys(unique_name("s")))
    await client.aclose()


async def publish(
    store: RoomStore,
    block_id: str,
    session: str,
    gateway_id: str,
    update: bytes,
    *,
    author: str = "",
    history_max_bytes: int = 1 << 22,
) -> tuple[int, int, int]:
    """The PUBLISH script as the outbox runs it (pipelined, by EVALSHA, in production)."""
    keys = store.keys.room(block_id).as_list()
    args = (session, gateway_id, history_max_bytes, author, update)
    r = await store.redis.eval(PUBLISH, len(keys), *keys, *args)
    return int(r[0]), int(r[1]), int(r[2])


def edit(base: bytes, text: str) -> bytes:
    return text_update(text, base=base)


async def join(store: RoomStore, member: str, client: str, **kw: object) -> object:
    args: dict[object, object] = {
        "watcher": False,
        "claimed_session": "",
        "now_ms": 1000,
        "cap": 3,
        "new_session": "s" * 24,
        "template": template_update("tpl"),
        "grace_ms": 10_000,
    }
    args.update(kw)
    return await store.join("b", member, client_id=client, **args)  # type: ignore[arg-type]


async def test_join_elects_one_mentor_and_counts(store: RoomStore) -> None:
    first = await join(store, "g/1", "c1")
    second = await join(store, "g/2", "c2", new_session="t" * 24)
    watcher = await join(store, "g/3", "c3", watcher=True)
    assert [j.role for j in (first, second, watcher)] == ["mentor", "student", "watcher"]  # type: ignore[attr-defined]
    assert second.session == first.session  # type: ignore[attr-defined]
    assert watcher.presence.students == 1 and watcher.presence.watchers == 1  # type: ignore[attr-defined]
    assert watcher.presence.version > first.presence.version  # type: ignore[attr-defined]


async def test_room_cap_never_refuses_the_mentor(store: RoomStore) -> None:
    await join(store, "g/1", "m")
    for i in range(3):
        assert (await join(store, f"g/s{i}", f"s{i}")).role == "student"  # type: ignore[attr-defined]
    assert (await join(store, "g/x", "x")).role == "full"  # type: ignore[attr-defined]
    session = (await store.load("b")).session  # type: ignore[union-attr]
    back = await join(store, "g/m2", "m", claimed_session=session)
    assert back.role == "mentor"  # type: ignore[attr-defined]


async def test_a_joiner_keeps_an_away_mentors_grace_and_an_expired_one_is_not_joined(
    store: RoomStore,
) -> None:
    mentor = await join(store, "g/1", "m")
    session = mentor.session  # type: ignore[attr-defined]
    assert mentor.mentor_left_at is None  # type: ignore[attr-defined]
    await join(store, "g/2", "s1")
    assert (await store.leave("b", "g/1", 2000))[1]  # the mentor is away since 2000
    during = await join(store, "g/3", "s2", now_ms=2400, grace_ms=500)
    assert (during.role, during.session, during.mentor_left_at) == ("student", session, 2000)  # type: ignore[attr-defined]
    watcher = await join(store, "g/4", "w", watcher=True, now_ms=2499, grace_ms=500)
    assert watcher.mentor_left_at == 2000  # type: ignore[attr-defined]
    # The grace is over and nobody closed the room (its deadline was lost): not joined,
    # and nothing about the room changed.
    before = await store.redis.hgetall(store.keys.room("b").members)
    late = await join(store, "g/5", "s3", now_ms=2500, grace_ms=500)
    assert (late.role, late.session) == ("expired", session)  # type: ignore[attr-defined]
    late_watcher = await join(store, "g/6", "w2", watcher=True, now_ms=9000, grace_ms=500)
    assert late_watcher.role == "expired"  # type: ignore[attr-defined]
    assert await store.redis.hgetall(store.keys.room("b").members) == before
    # The mentor coming back with their session still gets the room back, grace or not.
    back = await join(store, "g/7", "m", claimed_session=session, now_ms=9000, grace_ms=500)
    assert (back.role, back.mentor_left_at) == ("mentor", None)  # type: ignore[attr-defined]
    after = await join(store, "g/8", "s4", now_ms=99_000, grace_ms=500, cap=10)
    assert (after.role, after.mentor_left_at) == ("student", None)  # type: ignore[attr-defined]
    # Ended, the next joiner opens a new session and mentors it.
    assert (await store.leave("b", "g/7", 100_000))[1]
    assert await join(store, "g/9", "s5", now_ms=200_000, grace_ms=500) == Joined(
        "expired", session
    )
    closed = await store.end_session(
        "b", session=session, now_ms=200_000, grace_ms=500, reason="mentor-left", force=False
    )
    assert isinstance(closed, Closed)
    fresh = await join(store, "g/9", "s5", now_ms=200_001, grace_ms=500, new_session="n" * 24)
    assert (fresh.role, fresh.session) == ("mentor", "n" * 24)  # type: ignore[attr-defined]


async def test_publish_load_compact(store: RoomStore) -> None:
    j = await join(store, "g/1", "c1")
    session = j.session  # type: ignore[attr-defined]
    tpl = template_update("tpl")
    updates = [edit(tpl, f"<{i}>") for i in range(5)]
    for i, u in enumerate(updates, start=1):
        seq, _, since = await publish(store, "b", session, "g", u)
        assert (seq, since) == (i, i)
    loaded = await store.load("b")
    assert isinstance(loaded, Loaded)
    assert loaded.snapshot is not None and [s for s, _ in loaded.entries] == [1, 2, 3, 4, 5]
    partial = await store.load("b", 3)
    assert isinstance(partial, Loaded) and partial.snapshot is None
    assert [s for s, _ in partial.entries] == [4, 5]
    doc: Doc[Text] = Doc()
    for u in [tpl, *updates[:3]]:
        doc.apply_update(u)
    assert await store.compact("b", session, 3, doc.get_update())
    assert not await store.compact("b", session, 2, doc.get_update())  # older: refused
    after = await store.load("b")
    assert isinstance(after, Loaded) and after.snapshot is not None
    assert [s for s, _ in after.entries] == [4, 5]
    assert await publish(store, "b", "other-session", "g", updates[0]) == (-1, 0, 0)


async def test_close_waits_for_the_grace_then_leaves_a_tombstone(store: RoomStore) -> None:
    j = await join(store, "g/1", "m")
    session = j.session  # type: ignore[attr-defined]
    await join(store, "g/2", "s")
    assert await store.end_session(
        "b", session="", now_ms=2000, grace_ms=500, reason="r", force=False
    ) == ("stale", 0)
    removed, away, empty = await store.leave("b", "g/1", 2000)
    assert (removed, away, empty) == (1, True, False)
    assert await store.end_session(
        "b", session="", now_ms=2100, grace_ms=500, reason="r", force=False
    ) == ("wait", 2500)
    closed = await store.end_session(
        "b", session="", now_ms=2600, grace_ms=500, reason="r", force=False
    )
    assert isinstance(closed, Closed) and closed.session == session and closed.mentor == "m"
    assert await store.load("b") == session  # not open; the tombstone names the session
    assert await publish(store, "b", session, "g", b"\x00\x00") == (-2, 0, 0)


async def test_reaping_a_gateway_by_prefix(store: RoomStore) -> None:
    await join(store, "dead/1", "m")
    await join(store, "dead/2", "s1")
    await join(store, "live/1", "s2")
    removed, away, _ = await store.leave("b", "dead/", 5000, prefix=True)
    assert (removed, away) == (2, True)
    loaded = await store.load("b")
    assert isinstance(loaded, Loaded)
    assert (loaded.presence.mentor, loaded.presence.students) == (False, 1)


async def test_resync_recreates_a_lost_room_but_not_a_closed_one(store: RoomStore) -> None:
    j = await join(store, "g/1", "m")
    session = j.session  # type: ignore[attr-defined]
    await store.redis.delete(*store.room_keys("b").as_list()[:4])  # Redis "lost" it
    status, epoch, away = await store.resync(
        "b",
        session=session,
        now_ms=1,
        new_epoch="e2",
        snapshot=template_update("x"),
        members=[("g/1", "m", "m")],
    )
    assert (status, epoch, away) == ("ok", "e2", False)
    again = await store.resync(
        "b",
        session=session,
        now_ms=1,
        new_epoch="e3",
        snapshot=b"\x00\x00",
        members=[("g/1", "m", "m")],
    )
    assert again == ("ok", "e2", False)  # same epoch; member not counted twice
    loaded = await store.load("b")
    assert isinstance(loaded, Loaded) and loaded.presence.mentor
    await store.end_session("b", session=session, now_ms=1, grace_ms=0, reason="r", force=True)
    gone = await store.resync(
        "b", session=session, now_ms=1, new_epoch="e4", snapshot=b"\x00\x00", members=[]
    )
    assert gone[0] == "closed"


async def test_resync_reseeds_a_state_behind_or_suspect_after_a_failover(store: RoomStore) -> None:
    """docs/cluster.md, "Failover": a promoted replica may hold the room's state without
    the last writes a gateway applied (seq behind), or the gateway knows the primary
    failed over (suspect). The first gateway to resync re-seeds; a later one, which knows
    the old epoch, does not re-seed again."""
    j = await join(store, "g/1", "m")
    session = j.session  # type: ignore[attr-defined]
    loaded = await store.load("b")
    assert isinstance(loaded, Loaded)
    epoch = loaded.epoch

    async def resync(new: str, known: str, applied: int, suspect: bool) -> str:
        status, now, _ = await store.resync(
            "b",
            session=session,
            now_ms=1,
            new_epoch=new,
            snapshot=template_update("x"),
            members=[("g/1", "m", "m")],
            epoch=known,
            applied_seq=applied,
            suspect=suspect,
        )
        assert status == "ok"
        return now

    assert await resync("e1", epoch, loaded.seq, False) == epoch  # up to date: kept
    assert await resync("e2", epoch, loaded.seq + 3, False) == "e2"  # behind: re-seeded
    reseeded = await store.load("b")
    assert isinstance(reseeded, Loaded)
    assert reseeded.presence.version > loaded.presence.version  # versions only grow
    assert await resync("e3", "e2", 0, True) == "e3"  # failed over: re-seeded
    assert await resync("e4", "e2", 0, True) == "e3"  # another epoch already: kept


async def test_solved_flag_flips_once_per_match_in_sequence_order(store: RoomStore) -> None:
    j = await join(store, "g/1", "m")
    session = j.session  # type: ignore[attr-defined]
    assert await store.mark_solved("b", session, 5, True)
    assert not await store.mark_solved("b", session, 6, True)  # already solved
    assert not await store.mark_solved("b", session, 4, False)  # older check: ignored
    assert not await store.mark_solved("b", session, 7, False)
    assert await store.mark_solved("b", session, 8, True)


async def test_what_the_scripts_publish_is_the_channel_codecs_format(store: RoomStore) -> None:
    """The Lua writes U, P, S and C itself: each message decodes with services.gateway.channel
    and encodes back to the same bytes."""
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.keys.room("b").channel)
    try:
        j = await join(store, "g/1", "m")
        session = j.session  # type: ignore[attr-defined]
        await publish(store, "b", session, "gw-1", edit(template_update("tpl"), "x"))
        await store.mark_solved("b", session, 1, True)
        await store.mark_solved("b", session, 2, False)
        await store.end_session("b", session="", now_ms=1, grace_ms=0, reason="empty", force=True)
        raw: list[bytes] = []
        deadline = time.monotonic() + scaled(5)
        while len(raw) < 5:  # None: a subscribe confirmation (ignored) or nothing yet
            assert time.monotonic() < deadline, f"only {len(raw)} messages published"
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if item is not None:
                raw.append(item["data"])
    finally:
        await pubsub.unsubscribe()
        close: Callable[[], Awaitable[None]] = pubsub.aclose  # redis-py leaves it unannotated
        await close()
    messages = [channel.decode(data) for data in raw]
    assert [type(m) for m in messages] == [
        channel.Presence,
        channel.LogEntry,
        channel.Solved,
        channel.Unsolved,
        channel.SessionClosed,
    ]
    presence, entry, solved, unsolved, closed = messages
    assert isinstance(presence, channel.Presence)
    assert presence == channel.Presence(presence.version, True, 0, 0)
    assert raw[0] == channel.encode_presence(presence)
    assert isinstance(entry, channel.LogEntry) and entry.origin == b"gw-1" and entry.seq == 1
    assert raw[1] == channel.encode_log_entry(entry.origin, entry.epoch, entry.seq, entry.update)
    assert solved == channel.Solved(1) and raw[2] == channel.encode_solved(1)
    assert unsolved == channel.Unsolved(2) and raw[3] == channel.encode_unsolved(2)
    assert closed == channel.SessionClosed(session, "empty")
    assert raw[4] == channel.encode_session_closed(session, "empty")


async def test_history_records_the_session_and_is_bounded(store: RoomStore) -> None:
    j = await join(store, "g/1", "m")
    session = j.session  # type: ignore[attr-defined]
    await join(store, "g/2", "s1")
    tpl = template_update("tpl")
    first, second, third = (edit(tpl, f"<{i}>") for i in range(3))
    bound = len(first) + len(second)
    for update, author in ((first, "ss1\tAda"), (second, "ss1\tAda\nss2"), (third, "ss2")):
        seq, _, _ = await publish(
            store, "b", session, "g", update, author=author, history_max_bytes=bound
        )
        assert seq > 0  # the room goes on past the history's bound
    assert await store.mark_solved("b", session, 3, True)
    await store.leave("b", "g/2", 3000)
    await store.leave("b", "g/1", 3000)
    keys = store.keys.room("b")
    assert await store.redis.xlen(keys.history) == 8
    closed = await store.end_session(
        "b", session="", now_ms=9000, grace_ms=0, reason="r", force=True
    )
    assert isinstance(closed, Closed)
    assert [e.kind for e in closed.history] == ["o", "j", "j", "u", "u", "s", "l", "l"]
    assert closed.history[0].data == tpl
    assert [e.author for e in closed.history[1:3]] == ["mm", "ss1"]
    assert [e.data for e in closed.history[3:5]] == [first, second]
    assert closed.history[4].author == "ss1\tAda\nss2"
    assert [e.author for e in closed.history[6:]] == ["ss1", "mm"]
    assert closed.history_cut  # the third update was over the bound
    assert [s for s, _ in closed.entries] == [1, 2, 3]  # the log has all three
    times = [e.at_ms for e in closed.history]
    assert times == sorted(times) and times[0] > 1_600_000_000_000
    assert not await store.redis.exists(keys.history)
