"""Runs shared with the room (docs/protocol.md, "Runs").

A client runs code in its own browser and sends the result as a ``run-result`` control
message (type 100). The gateway checks it (size, shape, UTF-8, the sender's rate), adds
who sent it from the socket (client id, role, the display name of the socket's own
awareness state: never from the message), and publishes it on the room's channel with
the RUN script, which also keeps the room's last ``RUNS_KEPT`` runs for late joiners.
Every gateway serving the room sends it to its members as a ``run`` event. A run never
touches the document or the solved flag. Watchers' runs stay on their page: a watcher's
``run-result`` is checked like anyone's, then dropped.

The checks, the budget and the codec are pure; ``RunRelay`` is the thin Redis shell.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.room import Effects, RoomCore
from services.gateway.store import now_ms
from shared.keys import Keys
from shared.protocol import CloseCode, MessageType, Role, control_frame
from shared.ywire import DecodeError, read_var_uint

log = logging.getLogger(__name__)

CONTROL_TAG: Final = bytes([MessageType.CONTROL])  # a client frame starting so is ours
MAX_RUN_FRAME: Final = 32 * 1024  # 4 KB of output, escaped as JSON, fits with room
OUTPUT_BYTES: Final = 4096
ERROR_BYTES: Final = 512
NAME_CHARS: Final = 64
MAX_DURATION_MS: Final = 86_400_000
MAX_LINE: Final = 10_000_000
RUNS_KEPT: Final = 50
RUNS_TTL_SECONDS: Final = 86_400
RUN_RATE: Final = 1.0  # runs relayed per second per member ...
RUN_BURST: Final = 5  # ... after a burst of this many
RUN_FLOOD: Final = 20  # refused runs in a row (budget empty) after which the socket is closed
LANGUAGES: Final = frozenset({"javascript", "python"})
STATES: Final = frozenset({"ok", "error", "timeout", "stopped"})
_REQUIRED: Final = frozenset({"type", "language", "state", "durationMs", "output"})
_ALLOWED: Final = _REQUIRED | {"truncated", "error", "line"}


class RunRefused(ValueError):
    """A control message that is not a valid run result: the sender is closed with 4400."""


def _utf8_size(text: str) -> int:
    # A lone surrogate (JSON "\\ud800") cannot be encoded: it is not text.
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise RunRefused("run result is not valid UTF-8") from None


def _count(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def parse_run_result(frame: bytes) -> dict[str, Any]:
    """The fields of a client's ``run-result`` control frame, checked; RunRefused if not."""
    if len(frame) > MAX_RUN_FRAME:
        raise RunRefused("run result too large")
    try:
        kind, pos = read_var_uint(frame, 0)
        size, pos = read_var_uint(frame, pos)
    except DecodeError as exc:
        raise RunRefused(str(exc)) from None
    if kind != MessageType.CONTROL or size != len(frame) - pos:
        raise RunRefused("control payload length does not match the frame")
    try:
        message = orjson.loads(frame[pos:])
    except orjson.JSONDecodeError:
        raise RunRefused("control message is not UTF-8 JSON") from None
    if not isinstance(message, dict):
        raise RunRefused("control message is not an object")
    if message.get("type") != "run-result":
        raise RunRefused("unknown control message from a client")
    keys = message.keys()
    if not _REQUIRED <= keys or not keys <= _ALLOWED:
        raise RunRefused("run result fields are wrong")
    language, state, output = message["language"], message["state"], message["output"]
    error, line = message.get("error"), message.get("line")
    truncated = message.get("truncated", False)
    if language not in LANGUAGES or state not in STATES:
        raise RunRefused("run result language or state unknown")
    if not _count(message["durationMs"], 0, MAX_DURATION_MS):
        raise RunRefused("run result duration out of range")
    if not isinstance(output, str) or _utf8_size(output) > OUTPUT_BYTES:
        raise RunRefused("run result output is not text of at most 4 KB")
    if error is not None and (not isinstance(error, str) or _utf8_size(error) > ERROR_BYTES):
        raise RunRefused("run result error is not text of at most 512 bytes")
    if line is not None and not _count(line, 1, MAX_LINE):
        raise RunRefused("run result line out of range")
    if type(truncated) is not bool:
        raise RunRefused("run result truncated is not a boolean")
    return {
        "language": language,
        "state": state,
        "durationMs": message["durationMs"],
        "output": output,
        "truncated": truncated,
        "error": error,
        "line": line,
    }


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


def run_event(
    result: dict[str, Any], *, run_id: str, client_id: str, name: str, role: Role, at_ms: int
) -> bytes:
    """The JSON of the ``run`` event every member gets (also kept in the room's list)."""
    run = {"id": run_id, "clientId": client_id, "name": name, "role": role, **result, "at": at_ms}
    return orjson.dumps({"type": "run", "run": run})


def recent_runs(entries: Iterable[bytes], session: str) -> bytes | None:
    """The ``runs`` event for a joiner from the room's list (entries ``session\\0event``),
    keeping only the current session's; None when there are none."""
    head = session.encode() + b"\x00"
    runs = [orjson.loads(entry[len(head) :])["run"] for entry in entries if entry.startswith(head)]
    if not runs:
        return None
    return control_frame(orjson.dumps({"type": "runs", "runs": runs}))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RunBudget:
    """Each member's run rate: ``RUN_BURST`` at once, then ``RUN_RATE`` a second. A run
    over the budget is ignored (the client itself sends at most one a second); a member
    that keeps sending ``RUN_FLOOD`` more with the budget empty is closed with 4429."""

    MAX_MEMBERS = 4096  # buckets kept; full ones are forgotten first

    def __init__(self, rate: float = RUN_RATE, burst: int = RUN_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, member_id: str, now: float) -> bool | None:
        """True: relay it; False: ignore it; None: the member is flooding (close it)."""
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
        return None if bucket.tokens <= -RUN_FLOOD else False

    def _forget_full(self, now: float) -> None:
        full = [
            m
            for m, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for member_id in full or list(self._buckets)[: self.MAX_MEMBERS // 2]:
            del self._buckets[member_id]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one ``run-result``: publish ``event`` (JSON) or not, or close."""

    event: bytes | None = None
    close: CloseCode | None = None
    reason: str = ""


def decide(
    frame: bytes,
    *,
    role: Role,
    client_id: str,
    awareness_states: Iterable[str],
    allowed: bool | None,
    run_id: str,
    at_ms: int,
) -> Decision:
    """Check a client's control frame; ``allowed`` is the member's budget verdict."""
    try:
        result = parse_run_result(frame)
    except RunRefused as exc:
        return Decision(close=CloseCode.BAD_REQUEST, reason=str(exc)[:100])
    if allowed is None:
        return Decision(close=CloseCode.RATE_LIMITED, reason="too many run results")
    if role == "watcher" or not allowed:
        return Decision()
    name = display_name(awareness_states)
    event = run_event(result, run_id=run_id, client_id=client_id, name=name, role=role, at_ms=at_ms)
    return Decision(event=event)


# KEYS: state, runs, channel. ARGV: session, run event (JSON), runs kept, ttl seconds.
# Entries are "<session>\0<event>"; a list left by an earlier session is replaced.
RUN = """
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return 0 end
local tag = ARGV[1] .. '\\0'
local head = redis.call('LINDEX', KEYS[2], 0)
if head and string.sub(head, 1, string.len(tag)) ~= tag then redis.call('DEL', KEYS[2]) end
redis.call('RPUSH', KEYS[2], tag .. ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], 'R' .. ARGV[2])
return 1
"""


class RunRelay:
    """The shell: budget per member, the RUN script, the joiner's ``runs`` event."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._spawn = spawn
        self._script = redis.register_script(RUN)
        self._order = asyncio.Lock()  # runs are published in the order they came (FIFO)
        self.budget = RunBudget()

    def receive(self, core: RoomCore, member_id: str, frame: bytes, now: float) -> Effects:
        """A type-100 frame from a member: relay it, ignore it, or close the sender."""
        if not core.take_token(member_id, now):  # every frame counts in the socket's rate
            return Effects(close=CloseCode.RATE_LIMITED, reason="too many messages")
        member = core.members[member_id]
        states = [core.awareness[c][1] for c in member.awareness_ids if c in core.awareness]
        decision = decide(
            frame,
            role=member.role,
            client_id=member.client_id,
            awareness_states=states,
            allowed=self.budget.take(member_id, now),
            run_id=secrets.token_hex(8),
            at_ms=now_ms(),
        )
        if decision.event is not None:
            self._spawn(self._publish(core.block_id, core.session, decision.event))
        return Effects(close=decision.close, reason=decision.reason)

    async def _publish(self, block_id: str, session: str, event: bytes) -> None:
        keys = self._keys.room(block_id)
        try:
            async with self._order:
                await self._script(
                    keys=[keys.state, keys.runs, keys.channel],
                    args=[session, event, RUNS_KEPT, RUNS_TTL_SECONDS],
                )
        except RedisError as exc:
            log.warning("a run in %s could not be shared: %s", block_id, exc)

    def greet(self, block_id: str, session: str, send: Callable[[bytes], None]) -> None:
        """Send a joiner the room's last runs (if any), after its welcome."""
        self._spawn(self._greet(block_id, session, send))

    async def _greet(self, block_id: str, session: str, send: Callable[[bytes], None]) -> None:
        try:
            entries = await self._redis.lrange(self._keys.room(block_id).runs, 0, -1)
        except RedisError as exc:
            log.warning("the runs of %s could not be read: %s", block_id, exc)
            return
        raw = [e.encode() if isinstance(e, str) else e for e in entries]  # bytes: no decoding
        frame = recent_runs(raw, session)
        if frame is not None:
            send(frame)
