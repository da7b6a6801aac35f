"""Room chat, the mentor's line hints and "follow me" (docs/protocol.md, "Chat and hints").

Clients send ``chat``, ``hint``, ``hint-resolve`` and ``follow-me`` control messages
(type 100). The gateway checks them (size, shape, UTF-8, who may send what, the sender's
rate), adds the author from the socket (role, the display name of the socket's own
awareness state; never from the message) and publishes the event on the room's channel
(``M``), keeping the room's last ``CHAT_KEPT`` messages and ``HINT_EVENTS_KEPT`` hint
events for late joiners (``follow-me`` is not kept). Every gateway sends it to its
members. A refusal that a well-behaved client can meet (a watcher writing, a student
sending a hint, the rate) is answered with a ``refused`` event and the socket stays
open; a malformed message closes the sender with 4400, and a sender that keeps going
over the rate is closed with 4429, as for runs.

The checks and the codec are pure; the budget, the script's shape and the shell are the
ones runs use too (``eventrelay.py``). Runs share the same way in: ``control_type``
tells ours from the rest, which goes to ``runs.py``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from redis.exceptions import RedisError

from services.gateway.channel import CHAT_KIND
from services.gateway.eventrelay import (
    Decision,
    EventRelay,
    Incoming,
    Keeping,
    control_json,
    display_name,
    keep_and_publish,
    kept_entries,
)
from shared.keys import RoomKeys
from shared.protocol import CloseCode, Role, control_frame
from shared.ywire import DecodeError, read_var_uint

log = logging.getLogger(__name__)

KINDS: Final = frozenset({"chat", "hint", "hint-resolve", "follow-me"})
MAX_CHAT_FRAME: Final = 16 * 1024  # 1,000 characters escaped as JSON (\uXXXX) fit
MAX_TEXT_CHARS: Final = 1000
MAX_ANCHOR_CHARS: Final = 128  # base64 of a Yjs relative position (a few dozen bytes)
MAX_LINE: Final = 1_000_000
CHAT_KEPT: Final = 200
HINT_EVENTS_KEPT: Final = 200  # hints and their resolutions
CHAT_RATE: Final = 1.0  # messages a second per member ...
CHAT_BURST: Final = 8  # ... after a burst of this many
_FIELDS: Final[dict[str, frozenset[str]]] = {  # exactly these fields, nothing else
    "chat": frozenset({"type", "text"}),
    "hint": frozenset({"type", "text", "anchor", "line"}),
    "hint-resolve": frozenset({"type", "id"}),
    "follow-me": frozenset({"type", "on"}),
}
_HINT_ID = re.compile(r"[0-9a-f]{16}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class ChatRefused(ValueError):
    """A control message that is not a valid chat/hint message: close the sender (4400)."""


def control_type(frame: bytes) -> str | None:
    """The ``type`` of a client's control frame if it is one of ours, else None (the
    frame then goes to runs, which refuses what it does not know)."""
    if len(frame) > MAX_CHAT_FRAME:
        return None
    try:
        _, pos = read_var_uint(frame, 0)
        _, pos = read_var_uint(frame, pos)
        message = orjson.loads(frame[pos:])
    except (DecodeError, orjson.JSONDecodeError):
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if kind in KINDS else None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatRefused("text is not a string")
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): not text
        raise ChatRefused("text is not valid UTF-8") from None
    if len(value) > MAX_TEXT_CHARS:
        raise ChatRefused("text longer than 1000 characters")
    if not value.strip():
        raise ChatRefused("text is empty")
    return value


def parse_message(frame: bytes) -> dict[str, Any]:
    """The checked fields of a client's chat/hint/hint-resolve/follow-me frame."""
    if len(frame) > MAX_CHAT_FRAME:
        raise ChatRefused("message too large")
    message = control_json(frame, ChatRefused)
    if not isinstance(message, dict) or message.get("type") not in _FIELDS:
        raise ChatRefused("not a chat message")
    if message.keys() != _FIELDS[message["type"]]:
        raise ChatRefused(f"{message['type']} fields are wrong")
    kind = message["type"]
    if kind == "chat":
        return {"type": kind, "text": _text(message["text"])}
    if kind == "hint":
        anchor, line = message["anchor"], message["line"]
        if not isinstance(anchor, str) or not 0 < len(anchor) <= MAX_ANCHOR_CHARS:
            raise ChatRefused("hint anchor is not a short string")
        try:
            if not _BASE64.fullmatch(anchor):
                raise binascii.Error
            base64.b64decode(anchor, validate=True)
        except binascii.Error:
            raise ChatRefused("hint anchor is not base64") from None
        if type(line) is not int or not 1 <= line <= MAX_LINE:
            raise ChatRefused("hint line out of range")
        return {"type": kind, "text": _text(message["text"]), "anchor": anchor, "line": line}
    if kind == "hint-resolve":
        hint_id = message["id"]
        if not isinstance(hint_id, str) or not _HINT_ID.fullmatch(hint_id):
            raise ChatRefused("hint id is not one of ours")
        return {"type": kind, "id": hint_id}
    if type(message["on"]) is not bool:
        raise ChatRefused("follow-me on is not a boolean")
    return {"type": kind, "on": message["on"]}


# Who may send what; everyone else gets a ``refused`` event (code ``forbidden``).
MAY_SEND: Final[dict[str, frozenset[Role]]] = {
    "chat": frozenset({"mentor", "student"}),
    "hint": frozenset({"mentor"}),
    "hint-resolve": frozenset({"mentor"}),
    "follow-me": frozenset({"mentor"}),
}


def refused(kind: str, code: str, reason: str) -> bytes:
    """The ``refused`` event for the sender only (the socket stays open)."""
    event = {"type": "refused", "of": kind, "code": code, "reason": reason}
    return control_frame(orjson.dumps(event))


def decide(incoming: Incoming) -> Decision:
    """Check a client's chat/hint frame; the event's id is ``incoming.event_id``."""
    role, allowed, event_id, at_ms = (
        incoming.role,
        incoming.allowed,
        incoming.event_id,
        incoming.at_ms,
    )
    try:
        message = parse_message(incoming.frame)
    except ChatRefused as exc:
        return Decision(close=CloseCode.BAD_REQUEST, reason=str(exc)[:100])
    kind = message["type"]
    if role not in MAY_SEND[kind]:
        who = "watchers" if role == "watcher" else f"{role}s"
        return Decision(reply=refused(kind, "forbidden", f"{who} may not send {kind}"))
    if allowed is None:
        return Decision(close=CloseCode.RATE_LIMITED, reason="too many chat messages")
    if not allowed:
        return Decision(reply=refused(kind, "rate-limited", "too many messages: wait a moment"))
    author = {"name": display_name(incoming.awareness_states), "role": role}
    if kind == "chat":
        body = {"id": event_id, **author, "text": message["text"], "at": at_ms}
        return Decision(event=orjson.dumps({"type": "chat", "message": body}), keep="chat")
    if kind == "hint":
        hint = {
            "id": event_id,
            **author,
            "text": message["text"],
            "anchor": message["anchor"],
            "line": message["line"],
            "at": at_ms,
        }
        return Decision(event=orjson.dumps({"type": "hint", "hint": hint}), keep="hints")
    if kind == "hint-resolve":
        event = {"type": "hint-resolved", "id": message["id"], "at": at_ms}
        return Decision(event=orjson.dumps(event), keep="hints")
    # The mentor's own Yjs ids (its socket's awareness): whom to follow.
    ids = sorted(incoming.awareness_ids)
    event = {"type": "follow-me", "on": message["on"], **author, "awarenessIds": ids}
    return Decision(event=orjson.dumps(event))


def history(chat: Iterable[bytes], hints: Iterable[bytes], session: str) -> bytes | None:
    """The ``chat-history`` event for a joiner from the room's lists (entries
    ``session\\0event``; other sessions' skipped), hints with their resolution folded
    in; None when there is nothing."""
    messages = [event["message"] for event in kept_entries(chat, session)]
    by_id: dict[str, dict[str, Any]] = {}
    for event in kept_entries(hints, session):
        if event["type"] == "hint":
            by_id[event["hint"]["id"]] = {**event["hint"], "resolvedAt": None}
        elif event["id"] in by_id:
            by_id[event["id"]]["resolvedAt"] = event["at"]
    if not messages and not by_id:
        return None
    out = {"type": "chat-history", "messages": messages, "hints": list(by_id.values())}
    return control_frame(orjson.dumps(out))


def archive_of(chat: Iterable[bytes], hints: Iterable[bytes], session: str) -> dict[str, Any]:
    """The chat and hints of a closed session, as the archive keeps them."""
    frame = history(chat, hints, session)
    if frame is None:
        return {"messages": [], "hints": []}
    _, pos = read_var_uint(frame, 0)
    _, pos = read_var_uint(frame, pos)
    event = orjson.loads(frame[pos:])
    return {"messages": event["messages"], "hints": event["hints"]}


# A resolution (ARGV[5]: the hint id, '' otherwise) needs its hint in the list and not
# yet resolved; else nothing is kept or published.
_RESOLVES_A_KEPT_HINT = """
if ARGV[5] ~= '' then
  local found = false
  local hint = tag .. '{"type":"hint","hint":{"id":"' .. ARGV[5] .. '"'
  local done = tag .. '{"type":"hint-resolved","id":"' .. ARGV[5] .. '"'
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if string.find(e, hint, 1, true) == 1 then found = true end
    if string.find(e, done, 1, true) == 1 then return 0 end
  end
  if not found then return 0 end
end
"""
CHAT_SCRIPT: Final = keep_and_publish(CHAT_KIND, _RESOLVES_A_KEPT_HINT)


class ChatRelay(EventRelay):
    """Chat in the room's ``chat`` list, hints and resolutions in ``hints``; a joiner
    gets both as one ``chat-history`` event, the archive gets them when the room closes."""

    what = "a chat message"
    script = CHAT_SCRIPT
    rate = CHAT_RATE
    burst = CHAT_BURST

    def decide(self, incoming: Incoming) -> Decision:
        return decide(incoming)

    def keeping(self, keys: RoomKeys, decision: Decision) -> Keeping:
        if decision.keep == "chat":
            return Keeping(keys.chat, CHAT_KEPT, ("",))
        assert decision.event is not None
        event = orjson.loads(decision.event)
        resolving = event["id"] if event["type"] == "hint-resolved" else ""
        return Keeping(keys.hints, HINT_EVENTS_KEPT if decision.keep else 0, (resolving,))

    def lists(self, keys: RoomKeys) -> Sequence[str]:
        return [keys.chat, keys.hints]

    def greeting(self, lists: list[list[bytes]], session: str) -> bytes | None:
        return history(lists[0], lists[1], session)

    async def archive(self, block_id: str, session: str) -> dict[str, Any]:
        """The chat and hints of a session that just closed (none if Redis fails)."""
        try:
            chat, hints = await self.read_lists(block_id)
        except RedisError as exc:
            log.warning("the chat of %s could not be archived: %s", block_id, exc)
            return {"messages": [], "hints": []}
        return archive_of(chat, hints, session)
