"""Who made an edit, as the room's replay history records it (docs/replay.md).

The tag of a socket is ``<role letter><client id>``, then a TAB and the display name its
awareness state announces (``user.name``), if any. It is computed once per member and
again only when that member's awareness state changes, so the hot path pays a dictionary
lookup per update.
"""

from __future__ import annotations

import orjson

from services.gateway.room import RoomCore

MAX_NAME = 40
MAX_TAGS = 50_000  # cached members across rooms, then forgotten all at once


def display_name(state: str | None) -> str:
    """The ``user.name`` of an awareness state (JSON), cleaned; "" when there is none."""
    if not state or state == "null":
        return ""
    try:
        data = orjson.loads(state)
    except orjson.JSONDecodeError:
        return ""
    user = data.get("user") if isinstance(data, dict) else None
    name = user.get("name") if isinstance(user, dict) else None
    if not isinstance(name, str):
        return ""
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in "\t\n")
    return cleaned.strip()[:MAX_NAME]


def author_tag(role: str, client_id: str, name: str) -> bytes:
    tag = role[:1] + client_id
    return (tag + "\t" + name if name else tag).encode()


class AuthorTags:
    """The history tag of each local member, cached per (member, awareness state)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str | None, bytes]] = {}

    def tag(self, core: RoomCore, member_id: str) -> bytes:
        member = core.members.get(member_id)
        if member is None:
            return b""
        state: str | None = None
        for client in member.awareness_ids:
            entry = core.awareness.states.get(client)
            if entry is not None and entry[1] != "null":
                state = entry[1]
                break
        cached = self._cache.get(member_id)
        if cached is not None and cached[0] is state:
            return cached[1]
        if len(self._cache) >= MAX_TAGS:
            self._cache.clear()
        tag = author_tag(member.role, member.client_id, display_name(state))
        self._cache[member_id] = (state, tag)
        return tag

    def forget(self, member_id: str) -> None:
        self._cache.pop(member_id, None)
