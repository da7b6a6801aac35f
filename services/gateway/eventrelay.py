"""What runs and chat share: a member's event checked, relayed on the room channel and
kept for late joiners (docs/protocol.md, "Runs" and "Chat and hints").

A client's control message (type 100) is counted in its socket's rate, then in its
member's ``Budget``; the kind's own pure ``decide`` checks it and takes the author from
the socket, never from the message. An event to share is published by one script shape,
``keep_and_publish``: the event goes to a bounded list of the room's current session
(a list left by an earlier session is replaced) and out on the room channel, in one
step, so a joiner's history and the channel agree. ``EventRelay`` is the thin Redis
shell around that; ``RunRelay`` (``runs.py``) and ``ChatRelay`` (``chat.py``) keep only
what is their own: the check, the event kinds, which list keeps what.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.room import Effects, RoomCore
from services.gateway.store import now_ms
from shared.keys import Keys, RoomKeys
from shared.protocol import CloseCode, MessageType, Role
from shared.ywire import DecodeError, read_var_uint

log = logging.getLogger(__name__)

FLOOD: Final = 20  # messages in a row over the budget after which the socket is closed
NAME_CHARS: Final = 64
KEPT_TTL_SECONDS: Final = 86_400  # a room's kept events outlive a quiet day, not more


def display_name(states: Iterable[str]) -> str:
    """The name in the sender's own awareness state (``user.name``), else "Guest"."""
    for raw in states:
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        user = state.get("user") if isinstance(state, dict) else None
        name = user.get("name") if isinstance(user, dict) else None
        if isinstance(name, str):
            clean = "".join(c for c in name if c.isprintable()).strip()[:NAME_CHARS]
            if clean:
                return clean
    return "Guest"


def control_json(frame: bytes, refused: type[ValueError]) -> Any:
    """The JSON of a client's control frame (type 100, then the JSON's length), or
    ``refused`` (the kind's own error) with the reason."""
    try:
        kind, pos = read_var_uint(frame, 0)
        size, pos = read_var_uint(frame, pos)
    except DecodeError as exc:
        raise refused(str(exc)) from None
    if kind != MessageType.CONTROL or size != len(frame) - pos:
        raise refused("control payload length does not match the frame")
    try:
        return orjson.loads(frame[pos:])
    except orjson.JSONDecodeError:
        raise refused("control message is not UTF-8 JSON") from None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class Budget:
    """Each member's rate for one kind of event: ``burst`` at once, then ``rate`` a
    second. A message over the budget is not relayed; a member that keeps sending
    ``FLOOD`` more with the budget empty is closed with 4429."""

    MAX_MEMBERS = 4096  # buckets kept; full ones are forgotten first

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, member_id: str, now: float) -> bool | None:
        """True: relay it; False: do not; None: the member is flooding (close it)."""
        bucket = self._buckets.get(member_id)
        if bucket is None:
            if len(self._buckets) >= self.MAX_MEMBERS:
                self._forget_full(now)
            bucket = self._buckets[member_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        bucket.tokens -= 1.0
        if bucket.tokens >= 0:
            return True
        return None if bucket.tokens <= -FLOOD else False

    def _forget_full(self, now: float) -> None:
        full = [
            m
            for m, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for member_id in full or list(self._buckets)[: self.MAX_MEMBERS // 2]:
            del self._buckets[member_id]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One control frame and what the shell knows of it: the sender (from its socket,
    never from the message), its budget verdict (``Budget.take``), and the id and time
    an event made of it gets."""

    frame: bytes
    role: Role
    client_id: str
    awareness_ids: list[int]
    awareness_states: list[str]
    allowed: bool | None
    event_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message: publish ``event`` (JSON; kept in the list ``keep``
    names, "" for none), answer the sender, or close it."""

    event: bytes | None = None
    keep: str = ""
    reply: bytes | None = None
    close: CloseCode | None = None
    reason: str = ""


def kept_entries(entries: Iterable[bytes], session: str) -> list[Any]:
    """The events of ``session`` in a kept list (entries ``session\\0event``), decoded;
    an earlier session's are skipped."""
    head = session.encode() + b"\x00"
    return [orjson.loads(e[len(head) :]) for e in entries if e.startswith(head)]


def keep_and_publish(kind: bytes, guard: str = "") -> str:
    """The Lua of one shared event: checked against the session, kept, published.

    KEYS: state, list, channel. ARGV: session, event (JSON), kept (0: not kept), ttl
    seconds, then what ``guard`` reads. ``guard`` (Lua, with ``tag`` the entries' head)
    may ``return 0`` to drop the event. Entries are ``<session>\\0<event>``; the channel
    message is ``kind`` then the event (``channel.py``)."""
    return f"""
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return 0 end
local tag = ARGV[1] .. '\\0'
{guard.strip()}
if tonumber(ARGV[3]) > 0 then
  local head = redis.call('LINDEX', KEYS[2], 0)
  if head and string.sub(head, 1, string.len(tag)) ~= tag then redis.call('DEL', KEYS[2]) end
  redis.call('RPUSH', KEYS[2], tag .. ARGV[2])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', KEYS[3], '{kind.decode()}' .. ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Keeping:
    """Where a published event goes: the list, how many it keeps, the guard's ARGV."""

    key: str
    kept: int
    args: tuple[str, ...] = ()


class EventRelay(ABC):
    """The shell: the member's budget, the script, the joiner's greeting. A kind says
    its script and rate, how it decides (``decide``), where an event is kept (``keeping``)
    and what a joiner gets from its lists (``lists``, ``greeting``)."""

    what: ClassVar[str]  # for the log: "a run"
    script: ClassVar[str]  # a ``keep_and_publish`` script
    rate: ClassVar[float]  # the member's ``Budget``: a second ...
    burst: ClassVar[int]  # ... after a burst of this many

    def __init__(
        self, redis: Redis, keys: Keys, spawn: Callable[[Coroutine[Any, Any, None]], Any]
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._spawn = spawn
        self._script = redis.register_script(self.script)
        self._order = asyncio.Lock()  # published in the order they came (FIFO)
        self.budget = Budget(self.rate, self.burst)

    # --- what each kind says -----------------------------------------------------------
    @abstractmethod
    def decide(self, incoming: Incoming) -> Decision:
        """The kind's pure check of one frame."""

    @abstractmethod
    def keeping(self, keys: RoomKeys, decision: Decision) -> Keeping:
        """Where ``decision.event`` is kept."""

    @abstractmethod
    def lists(self, keys: RoomKeys) -> Sequence[str]:
        """The lists a joiner's greeting is made of."""

    @abstractmethod
    def greeting(self, lists: list[list[bytes]], session: str) -> bytes | None:
        """The frame a joiner of ``session`` gets from ``lists`` (None: nothing kept)."""

    # --- the shell ---------------------------------------------------------------------
    def receive(self, core: RoomCore, member_id: str, frame: bytes, now: float) -> Effects:
        """A control frame from a member: relay it, refuse it, or close the sender."""
        if not core.take_token(member_id, now):  # every frame counts in the socket's rate
            return Effects(close=CloseCode.RATE_LIMITED, reason="too many messages")
        member = core.members[member_id]
        ids = [c for c in member.awareness_ids if c in core.awareness.states]
        incoming = Incoming(
            frame,
            role=member.role,
            client_id=member.client_id,
            awareness_ids=ids,
            awareness_states=[core.awareness.states[c][1] for c in ids],
            allowed=self.budget.take(member_id, now),
            event_id=secrets.token_hex(8),
            at_ms=now_ms(),
        )
        decision = self.decide(incoming)
        if decision.event is not None:
            self._spawn(self._publish(core.block_id, core.session, decision))
        reply = [decision.reply] if decision.reply is not None else []
        return Effects(reply=reply, close=decision.close, reason=decision.reason)

    async def _publish(self, block_id: str, session: str, decision: Decision) -> None:
        keys = self._keys.room(block_id)
        assert decision.event is not None
        keeping = self.keeping(keys, decision)
        try:
            async with self._order:
                await self._script(
                    keys=[keys.state, keeping.key, keys.channel],
                    args=[session, decision.event, keeping.kept, KEPT_TTL_SECONDS, *keeping.args],
                )
        except RedisError as exc:
            log.warning("%s in %s could not be shared: %s", self.what, block_id, exc)

    async def read_lists(self, block_id: str) -> list[list[bytes]]:
        """The room's kept lists (``lists``), as stored."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self.lists(self._keys.room(block_id)):
                pipe.lrange(key, 0, -1)
            return list(await pipe.execute())

    def greet(self, block_id: str, session: str, send: Callable[[bytes], None]) -> None:
        """Send a joiner what the room kept (if anything), after its welcome."""
        self._spawn(self._greet(block_id, session, send))

    async def _greet(self, block_id: str, session: str, send: Callable[[bytes], None]) -> None:
        try:
            lists = await self.read_lists(block_id)
        except RedisError as exc:
            log.warning("what %s kept could not be read: %s", block_id, exc)
            return
        frame = self.greeting(lists, session)
        if frame is not None:
            send(frame)
