"""Admitting room sockets: from the handshake to the room, and out again.

One ``handle`` call is the whole life of one socket: its address is counted against
``MAX_CONNECTIONS_PER_IP``, its block is looked up, it joins the room in Redis (which
picks its role), it gets into the room loaded here, is welcomed, reads until it closes
(``frames.py``) and leaves. Every refusal is a close code of the registry.
``drain`` stops admitting and sends everyone to another gateway (SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from websockets.datastructures import Headers

from services.gateway import tokens
from services.gateway.blocks import Block, BlockSource, BlockUnavailable
from services.gateway.chat import ChatRelay
from services.gateway.closing import RoomCloser
from services.gateway.connection import RoomConnection
from services.gateway.delivery import Delivery
from services.gateway.frames import FramePath
from services.gateway.inbound import newer_presence
from services.gateway.loader import RoomGone, RoomLoader
from services.gateway.metrics import GatewayMetrics
from services.gateway.outbox import Outbox
from services.gateway.registry import RoomHandle, RoomRegistry
from services.gateway.resp import reconnect_delay
from services.gateway.runs import RunRelay
from services.gateway.store import Joined, RoomStore, now_ms
from services.gateway.wire import presence_frame
from services.gateway.ydoc import template_update
from shared import protocol
from shared.protocol import CloseCode, Role
from shared.settings import Settings

log = logging.getLogger(__name__)

ROOM_PATH = "/ws/rooms/"
MAX_CLIENT_ID = 64
LEAVE_RETRY_SECONDS = 120.0  # a member's leave is retried this long while Redis is away


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The settings admission reads (from ``Settings``)."""

    token_secret: bytes
    resume_token_ttl_seconds: int
    mentor_grace_seconds: float
    max_room_members: int
    max_connections_per_ip: int
    trust_proxy_headers: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionPolicy:
        return cls(
            token_secret=settings.token_secret.get_secret_value().encode(),
            resume_token_ttl_seconds=settings.resume_token_ttl_seconds,
            mentor_grace_seconds=settings.mentor_grace_seconds,
            max_room_members=settings.max_room_members,
            max_connections_per_ip=settings.max_connections_per_ip,
            trust_proxy_headers=settings.trust_proxy_headers,
        )


class Admission:
    def __init__(
        self,
        gateway_id: str,
        policy: AdmissionPolicy,
        store: RoomStore,
        blocks: BlockSource,
        loader: RoomLoader,
        registry: RoomRegistry,
        frames: FramePath,
        delivery: Delivery,
        outbox: Outbox,
        closer: RoomCloser,
        runs: RunRelay,
        chat: ChatRelay,
        metrics: GatewayMetrics,
    ) -> None:
        self._id = gateway_id
        self._policy = policy
        self._store = store
        self._blocks = blocks
        self._loader = loader
        self._registry = registry
        self._frames = frames
        self._delivery = delivery
        self._outbox = outbox
        self._closer = closer
        self._runs = runs
        self._chat = chat
        self._metrics = metrics
        self._member_seq = 0
        self._per_ip: dict[str, int] = {}
        self.shutting_down = False

    def client_address(self, ws: RoomConnection) -> str:
        if self._policy.trust_proxy_headers:
            forwarded = ws.request.headers.get("X-Forwarded-For") if ws.request else None
            if forwarded:
                return forwarded.split(",")[-1].strip()
        peer = ws.remote_address
        return str(peer[0]) if peer else "?"

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
        disconnect = self._delivery.disconnect
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=20)
        except ValueError:
            await disconnect(ws, CloseCode.BAD_REQUEST, "too many query parameters")
            return
        limit = self._policy.max_connections_per_ip
        if limit and self._per_ip.get(ip, 0) >= limit:
            await disconnect(ws, CloseCode.RATE_LIMITED, "too many connections")
            return
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._metrics.connections.inc()
        try:
            client, role, token = (_param(params, k) for k in ("client", "role", "token"))
            ws.heartbeat = _param(params, "heartbeat") == "1"
            del params
            await self._serve(ws, block_id, client, role == "watcher", token)
        finally:
            self._metrics.connections.dec()
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]

    async def _join(
        self,
        block_id: str,
        member_id: str,
        watcher: bool,
        client_id: str,
        claimed: str,
        block: Block,
    ) -> Joined:
        """Join the room; a session whose mentor's grace is over (its deadline was lost
        with the closing set's node) is ended and archived first, then a new one joined."""
        joined = Joined("expired", "")
        for _ in range(2):
            joined = await self._store.join(
                block_id,
                member_id,
                watcher=watcher,
                client_id=client_id,
                claimed_session=claimed,
                now_ms=now_ms(),
                cap=self._policy.max_room_members,
                new_session=secrets.token_hex(12),
                template=template_update(block.template),
                grace_ms=self._closer.grace_ms,
            )
            if joined.role != "expired":
                break
            await self._closer.end(
                block_id, session=joined.session, force=False, reason="mentor-left"
            )
        return joined

    async def _serve(
        self, ws: RoomConnection, block_id: str, client: str, watcher: bool, token: str
    ) -> None:
        disconnect, send = self._delivery.disconnect, self._delivery.send
        if self.shutting_down:
            await disconnect(ws, CloseCode.SERVICE_RESTART, "gateway shutting down")
            return
        try:
            block = await self._blocks.get(block_id)
        except BlockUnavailable:
            await disconnect(ws, CloseCode.UNAVAILABLE, "block unavailable, try again")
            return
        if block is None:
            await disconnect(ws, CloseCode.UNKNOWN_BLOCK, "unknown code block")
            return
        client_id = client[:MAX_CLIENT_ID] or secrets.token_hex(8)
        if not client_id.isprintable() or "\x00" in client_id:
            client_id = secrets.token_hex(8)
        secret = self._policy.token_secret
        claimed = ""
        if token and secret:
            claimed = tokens.claimed_session(secret, token, block_id, client_id, time.time()) or ""
        self._member_seq += 1
        member_id = f"{self._id}/{self._member_seq}"
        try:
            joined = await self._join(block_id, member_id, watcher, client_id, claimed, block)
            if joined.mentor_left_at is not None:
                await self._closer.start_grace(
                    block_id, since=joined.mentor_left_at, keep_earlier=True
                )
        except RedisError as exc:
            log.warning("join failed: %s", exc)
            await disconnect(ws, CloseCode.TRY_AGAIN_LATER, "room state unavailable")
            return
        if joined.role == "expired":  # ended by someone else meanwhile, and again expired
            await disconnect(ws, CloseCode.TRY_AGAIN_LATER, "room is closing, try again")
            return
        if joined.role == "full":
            await disconnect(ws, CloseCode.ROOM_FULL, "room is full")
            return
        role: Role = joined.role  # type: ignore[assignment]
        try:
            await self._store.register(block_id, self._id)
            handle = await self._loader.room(block_id, block, joined.session)
        except RoomGone:
            # The room closed between this socket's join and its arrival here.
            await self._forget_member(block_id, member_id)
            send(ws, protocol.room_closed("mentor-left"))
            await disconnect(ws, CloseCode.ROOM_CLOSED, "room closed: mentor-left")
            return
        except RedisError as exc:
            log.warning("opening room %s failed: %s", block_id, exc)
            await self._forget_member(block_id, member_id)
            await disconnect(ws, CloseCode.TRY_AGAIN_LATER, "room unavailable")
            return
        core = handle.core
        assert core is not None
        self._metrics.joins.labels(role).inc()
        resume = None
        if role == "mentor" and secret:
            expiry = int(time.time()) + self._policy.resume_token_ttl_seconds
            resume = tokens.issue(secret, block_id, joined.session, client_id, expiry)
        handle.sockets[member_id] = ws
        if handle.closed:  # the room closed while this socket was joining
            send(ws, protocol.room_closed("mentor-left"))
            await disconnect(ws, CloseCode.ROOM_CLOSED, "room closed: mentor-left")
            await self._leave(block_id, handle, member_id)
            return
        try:
            send(
                ws,
                protocol.welcome(
                    role=role,
                    client_id=client_id,
                    resume_token=resume,
                    session=joined.session,
                    block_id=block_id,
                    grace_seconds=self._policy.mentor_grace_seconds,
                ),
            )
            for frame in core.add_member(member_id, client_id, role, time.monotonic()):
                send(ws, frame)
            # The newest counts: the join's own, or newer ones the channel brought.
            fresher = newer_presence(joined.presence, core.presence)
            counts = core.presence if fresher else joined.presence
            if counts is not None:
                send(ws, presence_frame(counts))
            self._runs.greet(block_id, joined.session, lambda frame: send(ws, frame))
            self._chat.greet(block_id, joined.session, lambda frame: send(ws, frame))
            # What the join needed is not kept alive for the socket's whole life.
            del block, joined, counts, resume, token, claimed, client
            await self._frames.read(ws, handle, member_id)
        finally:
            await self._leave(block_id, handle, member_id)

    async def _leave(self, block_id: str, handle: RoomHandle, member_id: str) -> None:
        handle.sockets.pop(member_id, None)
        self._frames.forget(member_id)
        if handle.core is not None and member_id in handle.core.members:
            effects = handle.core.remove_member(member_id)
            self._frames.carry_out(handle, member_id, None, effects)
        await self._forget_member(block_id, member_id)
        if not handle.sockets:
            self._registry.remove(block_id, handle)

    async def _forget_member(self, block_id: str, member_id: str) -> None:
        """Remove the member from the room's state, retrying while Redis is away or slow:
        nobody else removes a live gateway's member, and a room that keeps a ghost member
        never closes (its session is never archived). LEAVE is idempotent; the attempts
        are spaced like the Redis connections' reconnects (jittered, so that a gateway's
        many leaves do not retry in step)."""
        deadline = time.monotonic() + LEAVE_RETRY_SECONDS
        attempt = 0
        while True:
            attempt += 1
            try:
                _, mentor_away, empty = await self._store.leave(block_id, member_id, now_ms())
                await self._closer.after_leave(block_id, mentor_away, empty)
                if attempt > 1:
                    log.info("leave of %s done at attempt %d", member_id, attempt)
                return
            except RedisError as exc:
                if self.shutting_down or time.monotonic() > deadline:
                    # Stopping: our heartbeats stop too, and whoever reaps us removes it.
                    log.error("leave of %s failed %d times, giving up: %s", member_id, attempt, exc)
                    return
                log.warning(
                    "leave of %s failed (attempt %d), retrying: %s", member_id, attempt, exc
                )
            await asyncio.sleep(reconnect_delay(attempt))

    async def drain(self) -> None:
        """SIGTERM: admit no one, publish what is pending, then close every socket with
        1012 (the clients reconnect to another gateway)."""
        self.shutting_down = True
        await self._outbox.drained(2.0)
        closing = [
            self._delivery.disconnect(ws, CloseCode.SERVICE_RESTART, "gateway restarting")
            for ws in self._registry.sockets()
        ]
        await asyncio.gather(*closing, return_exceptions=True)


def _param(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[0] if values else ""
