"""The gateway's shell: sockets in, Redis out, the pure room core in between.

One ``Hub`` per process. It owns the rooms this gateway serves (a ``RoomCore`` plus the
local sockets), carries out the ``Effects`` the core returns, batches each room's
updates into one Redis publish at a time, and applies what arrives from the room
channel. It never awaits a client inside fan-out: frames are written synchronously to
each socket's transport, and a socket whose unsent bytes pass ``CLIENT_SEND_BUFFER_BYTES`` is
closed with 4000 (slow consumer).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs

from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from services.gateway import tokens
from services.gateway.archive import Archiver
from services.gateway.blocks import Block, BlockSource, BlockUnavailable
from services.gateway.connection import RoomConnection
from services.gateway.metrics import GatewayMetrics
from services.gateway.outbox import Outbox
from services.gateway.resp import Endpoint
from services.gateway.room import Effects, Limits, RoomCore, template_update
from services.gateway.scripts import Closed, Presence, RoomStore, now_ms
from services.gateway.sync import RoomSync
from services.gateway.wire import presence_frame, ws_frame
from services.gateway.writer import RedisWriter
from shared import protocol
from shared.keys import Keys
from shared.protocol import CloseCode, Role
from shared.settings import Settings

log = logging.getLogger(__name__)

ROOM_PATH = "/ws/rooms/"
MAX_CLIENT_ID = 64
KEEPALIVE_SLICES = 30  # the sockets are pinged in this many turns per keepalive interval


class RoomGone(Exception):
    """The session a socket joined closed before the socket got into the room."""


@dataclass(slots=True, eq=False)
class RoomHandle:
    block: Block
    core: RoomCore | None = None  # None until loaded from Redis
    sockets: dict[str, RoomConnection] = field(default_factory=dict)
    early: list[bytes] = field(default_factory=list)  # channel messages before the load
    compacting: bool = False
    catching_up: bool = False
    closed: bool = False
    needs_resync: bool = False  # Redis lost something of ours: re-register and republish
    presence: Presence | None = None  # the newest counts seen on the channel
    loaded: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        blocks: BlockSource,
        archiver: Archiver,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.id = settings.effective_gateway_id
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.store = RoomStore(redis, self.keys)
        self.blocks = blocks
        self.archiver = archiver
        self.metrics = metrics
        self.rooms: dict[str, RoomHandle] = {}
        self.limits = Limits(
            max_doc_bytes=settings.max_doc_bytes,
            max_frame_bytes=settings.max_frame_bytes,
            updates_per_second=settings.max_updates_per_second,
            burst=settings.update_burst,
        )
        self.secret = settings.token_secret.get_secret_value().encode()
        self.shutting_down = False
        self._member_seq = 0
        self._per_ip: dict[str, int] = {}
        self._opening: dict[str, asyncio.Future[RoomHandle]] = {}
        self._slow: set[RoomConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.relay: Any = None  # set by the composition root (services.gateway.relay.Relay)
        self.outbox = Outbox(
            RedisWriter(Endpoint.from_url(settings.redis_url), settings.redis_timeout_ms / 1000),
            self.store,
            self.id,
            self.on_published,
            self.on_publish_lost,
        )
        self.id_bytes = self.id.encode()  # compared with the origin of every channel message
        self.awareness_tag = b"A" + self.id_bytes + b"\x00"
        self.sync = RoomSync(self)

    # --- small helpers -------------------------------------------------------------
    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def send(self, ws: RoomConnection, frame: bytes) -> None:
        """Write one message now, without waiting; close the socket if it fell behind."""
        self._write(ws, ws_frame(frame))
        self.metrics.messages_out += 1

    def fanout(self, handle: RoomHandle, frame: bytes, skip: str | None = None) -> None:
        """The same message to every local member of a room, framed once."""
        wire = ws_frame(frame)
        write = self._write
        sent = 0
        for member_id, ws in handle.sockets.items():
            if member_id != skip:
                write(ws, wire)
                sent += 1
        if sent:
            self.metrics.messages_out += sent

    def _write(self, ws: RoomConnection, wire: bytes) -> None:
        # Server frames are unmasked and we never fragment or compress, so one encoded
        # frame serves every socket; websockets' own writes (pings, close) are whole
        # frames too, so nothing interleaves. A socket that is not open gets nothing.
        if ws.protocol.state is not State.OPEN:
            return
        transport = ws.transport
        transport.write(wire)
        if transport.get_write_buffer_size() > self.settings.client_send_buffer_bytes:
            if ws not in self._slow:
                self._slow.add(ws)
                self.spawn(self._close_slow(ws))

    async def _close_slow(self, ws: RoomConnection) -> None:
        try:
            await self._close(ws, CloseCode.SLOW_CONSUMER, "too far behind")
        finally:
            self._slow.discard(ws)

    async def _close(self, ws: RoomConnection, code: int, reason: str) -> None:
        self.metrics.closes.labels(str(code)).inc()
        try:
            await ws.close(code, reason)
        except ConnectionClosed:
            pass

    def client_address(self, ws: RoomConnection) -> str:
        if self.settings.trust_proxy_headers:
            forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request else None
            if forwarded:
                return forwarded.split(",")[-1].strip()
        peer = ws.remote_address
        return str(peer[0]) if peer else "?"

    # --- one socket -----------------------------------------------------------------
    async def handle(self, ws: RoomConnection) -> None:
        """The whole life of one room socket."""
        assert ws.request is not None
        path, _, query = ws.request.path.partition("?")
        block_id = path[len(ROOM_PATH) :]
        ip = self.client_address(ws)
        # The handshake's headers and response are not needed any more (websockets keeps
        # the request object itself to tell the handshake from later frames).
        ws.request.headers = Headers()
        ws.response = None
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=20)
        except ValueError:
            await self._close(ws, CloseCode.BAD_REQUEST, "too many query parameters")
            return
        limit = self.settings.max_connections_per_ip
        if limit and self._per_ip.get(ip, 0) >= limit:
            await self._close(ws, CloseCode.RATE_LIMITED, "too many connections")
            return
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self.metrics.connections.inc()
        try:
            client, role, token = (_param(params, k) for k in ("client", "role", "token"))
            del params
            await self._serve(ws, block_id, client, role == "watcher", token)
        finally:
            self.metrics.connections.dec()
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]

    async def _serve(
        self, ws: RoomConnection, block_id: str, client: str, watcher: bool, token: str
    ) -> None:
        if self.shutting_down:
            await self._close(ws, CloseCode.SERVICE_RESTART, "gateway shutting down")
            return
        try:
            block = await self.blocks.get(block_id)
        except BlockUnavailable:
            await self._close(ws, CloseCode.UNAVAILABLE, "block unavailable, try again")
            return
        if block is None:
            await self._close(ws, CloseCode.UNKNOWN_BLOCK, "unknown code block")
            return
        client_id = client[:MAX_CLIENT_ID] or secrets.token_hex(8)
        if not client_id.isprintable() or "\x00" in client_id:
            client_id = secrets.token_hex(8)
        claimed = ""
        if token and self.secret:
            claimed = (
                tokens.claimed_session(self.secret, token, block_id, client_id, time.time()) or ""
            )
        self._member_seq += 1
        member_id = f"{self.id}/{self._member_seq}"
        try:
            joined = await self.store.join(
                block_id,
                member_id,
                watcher=watcher,
                client_id=client_id,
                claimed_session=claimed,
                now_ms=now_ms(),
                cap=self.settings.max_room_members,
                new_session=secrets.token_hex(12),
                template=template_update(block.template),
            )
        except RedisError as exc:
            log.warning("join failed: %s", exc)
            await self._close(ws, CloseCode.TRY_AGAIN_LATER, "room state unavailable")
            return
        if joined.role == "full":
            await self._close(ws, CloseCode.ROOM_FULL, "room is full")
            return
        role: Role = joined.role  # type: ignore[assignment]
        try:
            await self.register(block_id)
            handle = await self._room(block_id, block, joined.session)
        except RoomGone:
            # The room closed between this socket's join and its arrival here.
            await self._forget_member(block_id, member_id)
            self.send(ws, protocol.room_closed("mentor-left"))
            await self._close(ws, CloseCode.ROOM_CLOSED, "room closed: mentor-left")
            return
        except RedisError as exc:
            log.warning("opening room %s failed: %s", block_id, exc)
            await self._forget_member(block_id, member_id)
            await self._close(ws, CloseCode.TRY_AGAIN_LATER, "room unavailable")
            return
        core = handle.core
        assert core is not None
        self.metrics.joins.labels(role).inc()
        resume = None
        if role == "mentor" and self.secret:
            expiry = int(time.time()) + self.settings.resume_token_ttl_seconds
            resume = tokens.issue(self.secret, block_id, joined.session, client_id, expiry)
        handle.sockets[member_id] = ws
        if handle.closed:  # the room closed while this socket was joining
            self.send(ws, protocol.room_closed("mentor-left"))
            await self._close(ws, CloseCode.ROOM_CLOSED, "room closed: mentor-left")
            await self._leave(block_id, handle, member_id)
            return
        try:
            self.send(
                ws,
                protocol.welcome(
                    role=role,
                    client_id=client_id,
                    resume_token=resume,
                    session=joined.session,
                    block_id=block_id,
                    grace_seconds=self.settings.mentor_grace_seconds,
                ),
            )
            for frame in core.add_member(member_id, client_id, role, time.monotonic()):
                self.send(ws, frame)
            counts = joined.presence
            if handle.presence is not None and (
                counts is None or handle.presence.version > counts.version
            ):
                counts = handle.presence
            if counts is not None:
                self.send(ws, presence_frame(counts))
            # What the join needed is not kept alive for the socket's whole life.
            del block, joined, counts, resume, token, claimed, client
            await self._read(ws, handle, member_id)
        finally:
            await self._leave(block_id, handle, member_id)

    async def _read(self, ws: RoomConnection, handle: RoomHandle, member_id: str) -> None:
        """Read the socket until it closes.

        Whole binary frames reach the ``_Reader`` straight from the event loop's read
        callback (services/gateway/connection.py); the handler only waits, and reads
        with ``recv`` what queued behind the socket's join or came otherwise framed."""
        assert handle.core is not None
        reader = _Reader(self, ws, handle, handle.core, member_id)
        ws.listener = reader
        loop = asyncio.get_running_loop()
        try:
            while ws.protocol.state is not State.CLOSED:
                if ws.backlog:
                    frame = await ws.recv()
                    ws.backlog -= 1
                    reader.message(frame)
                else:
                    reader.waiter = loop.create_future()
                    await reader.waiter
        except ConnectionClosed:
            pass
        finally:
            ws.listener = None
            reader.waiter = None

    def stop_reading(self, reader: _Reader, code: int | None = None, reason: str = "") -> None:
        """Nothing more is read from this socket; its handler ends once it has closed."""
        reader.stopped = True
        if code is not None:
            self.spawn(self._close(reader.ws, code, reason))

    def carry_out(
        self, handle: RoomHandle, member_id: str, ws: RoomConnection, effects: Effects
    ) -> None:
        for frame in effects.reply:
            self.send(ws, frame)
        for frame in effects.broadcast:
            self.fanout(handle, frame, skip=member_id)
        if effects.publish_update is not None and handle.core is not None:
            self.outbox.update(handle.block.id, handle.core.session, effects.publish_update)
        if effects.publish_awareness is not None:
            channel = self.keys.room(handle.block.id).channel
            self.outbox.awareness(channel, self.awareness_tag + effects.publish_awareness)

    async def _leave(self, block_id: str, handle: RoomHandle, member_id: str) -> None:
        handle.sockets.pop(member_id, None)
        if handle.core is not None and member_id in handle.core.members:
            effects = handle.core.remove_member(member_id)
            self.carry_out(handle, member_id, _NO_SOCKET, effects)  # type: ignore[arg-type]
        await self._forget_member(block_id, member_id)
        if not handle.sockets and self.rooms.get(block_id) is handle:
            await self._drop_room(block_id, handle)

    async def _forget_member(self, block_id: str, member_id: str) -> None:
        try:
            _, mentor_away, empty = await self.store.leave(block_id, member_id, now_ms())
            await self.after_leave(block_id, mentor_away, empty)
        except RedisError as exc:
            log.warning("leave of %s failed (the reaper or resync fixes it): %s", member_id, exc)

    async def after_leave(self, block_id: str, mentor_away: bool, empty: bool) -> None:
        if mentor_away:
            deadline = now_ms() + int(self.settings.mentor_grace_seconds * 1000)
            await self.redis.zadd(self.keys.closing, {block_id: deadline})
        elif empty:
            await self.close_room(block_id, session="", force=True, reason="empty")

    async def register(self, block_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.rooms, block_id)
            pipe.sadd(self.keys.gateway_rooms(self.id), block_id)
            await pipe.execute()

    # --- rooms --------------------------------------------------------------------------
    async def _room(self, block_id: str, block: Block, session: str) -> RoomHandle:
        """The loaded room for the session this socket joined, loading it (once) if needed.

        Raises RoomGone when that session closed before the socket got in."""
        while True:
            handle = self.rooms.get(block_id)
            if handle is None or handle.closed:
                pending = self._opening.get(block_id)
                if pending is not None:
                    await asyncio.shield(pending)
                    continue
                handle = await self._open(block_id, block)
            else:
                await handle.loaded.wait()
                if handle.closed or handle.core is None:
                    continue  # closed (or failed) while we waited: look again
            assert handle.core is not None
            if handle.core.session == session:
                return handle
            current = await self.redis.hget(self.keys.room(block_id).state, "session")
            if current is None or _text(current) != session:
                raise RoomGone(block_id)
            # The room held here belongs to an older session, which has closed.
            self.close_local(block_id, handle, "mentor-left")

    async def _open(self, block_id: str, block: Block) -> RoomHandle:
        future: asyncio.Future[RoomHandle] = asyncio.get_running_loop().create_future()
        self._opening[block_id] = future
        try:
            handle = await self._load_room(block_id, block)
            future.set_result(handle)
            return handle
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._opening[block_id]

    async def _load_room(self, block_id: str, block: Block) -> RoomHandle:
        handle = RoomHandle(block=block)
        self.rooms[block_id] = handle
        self.metrics.rooms.set(len(self.rooms))
        channel = self.keys.room(block_id).channel
        try:
            await self.relay.subscribe(channel)
            loaded = await self.store.load(block_id)
            if isinstance(loaded, str):
                raise RoomGone(block_id)
        except BaseException:
            self.rooms.pop(block_id, None)
            await self.relay.unsubscribe(channel)
            handle.loaded.set()
            raise
        core = RoomCore(block_id, loaded.session, loaded.epoch, block.solution, self.limits)
        core.load(loaded.snapshot, loaded.entries, loaded.seq)
        core.doc_bytes = loaded.doc_bytes
        handle.presence = loaded.presence
        core.solved = loaded.solved
        handle.core = core
        early, handle.early = handle.early, []
        for data in early:
            self.sync.on_channel_message(block_id, data)
        handle.loaded.set()
        self.sync.schedule_solved(handle)
        # Awareness is not logged: ask the other gateways for their members' states.
        self.outbox.awareness(channel, b"Q" + self.id_bytes)
        return handle

    async def _drop_room(self, block_id: str, handle: RoomHandle) -> None:
        # Updates still queued in the outbox go out without the handle.
        self.rooms.pop(block_id, None)
        self.metrics.rooms.set(len(self.rooms))
        await self.relay.unsubscribe(self.keys.room(block_id).channel)

    def close_local(self, block_id: str, handle: RoomHandle, reason: str) -> None:
        """The room closed: everyone here goes back to the lobby."""
        handle.closed = True
        if self.rooms.get(block_id) is handle:
            del self.rooms[block_id]
            self.metrics.rooms.set(len(self.rooms))
            self.spawn(self.relay.unsubscribe(self.keys.room(block_id).channel))
        frame = protocol.room_closed(reason)
        for ws in list(handle.sockets.values()):
            self.send(ws, frame)
            self.spawn(self._close(ws, CloseCode.ROOM_CLOSED, "room closed: " + reason))

    # --- publishing (the outbox reports back) ---------------------------------------------
    def on_published(
        self, block_id: str, session: str, seq: int, doc_bytes: int, since: int
    ) -> None:
        self.metrics.publishes += 1
        handle = self.rooms.get(block_id)
        core = handle.core if handle is not None else None
        if handle is None or core is None or core.session != session:
            return
        core.doc_bytes = doc_bytes
        if since > self.settings.log_compact_entries and not handle.compacting:
            handle.compacting = True
            self.spawn(self._compact(handle))

    def on_publish_lost(self, block_id: str, session: str, closed: bool) -> None:
        handle = self.rooms.get(block_id)
        if handle is None or handle.core is None or handle.core.session != session:
            if not closed:
                log.warning("updates for room %s could not be published (room gone)", block_id)
                self.outbox.forget(block_id)
            return
        if not closed:
            handle.needs_resync = True  # housekeeping resyncs, then releases the outbox

    async def _compact(self, handle: RoomHandle) -> None:
        core = handle.core
        try:
            if core is None or handle.closed:
                return
            await self.sync.catch_up(handle)
            await self.store.compact(
                core.block_id, core.session, core.applied_seq, core.full_update()
            )
        except RedisError as exc:
            log.warning("compaction of %s failed: %s", handle.block.id, exc)
        finally:
            handle.compacting = False

    # --- closing, reaping, resync (called by housekeeping and the relay) -------------------
    async def close_room(self, block_id: str, *, session: str, force: bool, reason: str) -> str:
        """Close a room if its mentor's grace is over (or now, with force); archive it."""
        result = await self.store.close(
            block_id,
            session=session,
            now_ms=now_ms(),
            grace_ms=int(self.settings.mentor_grace_seconds * 1000),
            reason=reason,
            force=force,
        )
        if not isinstance(result, Closed):
            status, deadline = result
            if status == "wait":
                await self.redis.zadd(self.keys.closing, {block_id: deadline})
            return status
        await self.redis.srem(self.keys.rooms, block_id)
        self.metrics.rooms_closed.inc()
        if result.mentor:
            self.archiver.archive(block_id, result, reason)
        return "closed"

    async def keepalive(self) -> None:
        """Ping every socket once per KEEPALIVE_SECONDS; close those that did not answer
        the previous ping.

        One loop for the whole gateway instead of websockets' task per connection (each
        task and its timer cost memory on every idle socket). The sockets are pinged a
        slice at a time, about one slice a second: pinging 5,000 sockets at once would
        stall the gateway (and the clients) for a write per socket in one go."""
        interval = self.settings.keepalive_seconds
        slices = max(1, min(KEEPALIVE_SLICES, int(interval)))
        waiters: dict[RoomConnection, asyncio.Future[float]] = {}
        turn = 0
        while True:
            await asyncio.sleep(interval / slices)
            turn = (turn + 1) % slices
            if turn == 0:  # once a round: forget the sockets that have gone
                waiters = {ws: w for ws, w in waiters.items() if ws.protocol.state is State.OPEN}
            sockets = [
                ws
                for h in list(self.rooms.values())
                for ws in list(h.sockets.values())
                if hash(ws) % slices == turn
            ]
            for ws in sockets:
                if ws.protocol.state is not State.OPEN:
                    continue
                waiter = waiters.pop(ws, None)
                if waiter is not None and not waiter.done():
                    self.spawn(self._close(ws, CloseCode.INTERNAL_ERROR, "keepalive ping timeout"))
                    continue
                try:
                    waiters[ws] = cast(asyncio.Future[float], await ws.ping())
                except ConnectionClosed:
                    pass

    async def drain(self) -> None:
        """SIGTERM: publish what is pending, then close every socket with 1012."""
        self.shutting_down = True
        await self.outbox.drained(2.0)
        closing = [
            self._close(ws, CloseCode.SERVICE_RESTART, "gateway restarting")
            for handle in list(self.rooms.values())
            for ws in list(handle.sockets.values())
        ]
        await asyncio.gather(*closing, return_exceptions=True)


class _Reader:
    """One room socket's messages, as they arrive (``RoomConnection.listener``)."""

    __slots__ = ("core", "handle", "hub", "member_id", "stopped", "waiter", "ws")

    def __init__(
        self, hub: Hub, ws: RoomConnection, handle: RoomHandle, core: RoomCore, member_id: str
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.handle = handle
        self.core = core
        self.member_id = member_id
        self.stopped = False  # the socket is being closed: what it sends is dropped
        self.waiter: asyncio.Future[None] | None = None  # the handler waiting for news

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def message(self, frame: bytes | str) -> None:
        if self.stopped:
            return
        hub = self.hub
        hub.metrics.messages_in += 1
        if self.handle.closed:
            hub.stop_reading(self)  # room-closed and 4410 are on their way (close_local)
        elif isinstance(frame, str):
            hub.stop_reading(self, CloseCode.BAD_REQUEST, "text frames are not allowed")
        else:
            try:
                effects = self.core.receive(self.member_id, frame, time.monotonic())
                hub.carry_out(self.handle, self.member_id, self.ws, effects)
            except Exception:
                log.exception("a message from %s failed", self.member_id)
                hub.stop_reading(self, CloseCode.INTERNAL_ERROR, "internal error")
                return
            if effects.close is not None:
                hub.stop_reading(self, effects.close, effects.reason)


class _NoSocket:
    """Stands in for the sender when the core's effects have no sender (a leave)."""


_NO_SOCKET = _NoSocket()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _param(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[0] if values else ""
