"""Every Redis key and channel coderoom uses, and nothing else (see docs/redis.md).

A room's keys share the hash tag ``{room:<block_id>}`` so that they live in one cluster
slot and one Lua script may touch them together. Fleet-wide keys carry no room tag.
Pure functions: no I/O, no f-string key anywhere else in the code base.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

ARCHIVE_GROUP = "archivers"
"""Consumer group of the archive queue (one consumer per gateway id)."""


@dataclass(frozen=True, slots=True)
class RoomKeys:
    """The keys of one room, in the order the Lua scripts take them."""

    state: str  # hash: session, mentor, counters, seq, snap_seq, solved ...
    members: str  # hash: member id -> "<role><client id>"
    log: str  # stream: CRDT updates since the snapshot, ids "<seq>-1"
    doc: str  # string: snapshot (a Yjs update holding the state at snap_seq)
    channel: str  # pub/sub channel of the room
    tomb: str  # string: the session that closed last (so a lost Redis is told from a close)
    history: str  # stream: the session's timestamped record for replay (docs/replay.md)
    runs: str  # list: the last runs shared in the room (not one of the scripts' KEYS)
    chat: str  # list: the room's last chat messages (services/gateway/chat.py)
    hints: str  # list: the room's last hints and their resolutions

    def as_list(self) -> list[str]:
        return [self.state, self.members, self.log, self.doc, self.channel, self.tomb, self.history]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key schema under one configurable prefix."""

    prefix: str = "coderoom"

    @lru_cache(maxsize=16384)  # noqa: B019 - Keys instances live as long as the process
    def room(self, block_id: str) -> RoomKeys:
        """The keys of one room (cached: they are looked up for every message)."""
        tag = f"{self.prefix}:{{room:{block_id}}}"
        return RoomKeys(
            state=f"{tag}:state",
            members=f"{tag}:members",
            log=f"{tag}:log",
            doc=f"{tag}:doc",
            channel=f"{tag}:ch",
            tomb=f"{tag}:closed",
            history=f"{tag}:history",
            runs=f"{tag}:runs",
            chat=f"{tag}:chat",
            hints=f"{tag}:hints",
        )

    @property
    def rooms(self) -> str:
        """Set of block ids whose room is open (read by the api for the lobby)."""
        return f"{self.prefix}:rooms"

    @property
    def gateways(self) -> str:
        """Sorted set: gateway id -> last heartbeat (ms since the epoch)."""
        return f"{self.prefix}:gateways"

    def gateway_rooms(self, gateway_id: str) -> str:
        """Set of block ids in which a gateway has (or had) members."""
        return f"{self.prefix}:gw:{gateway_id}:rooms"

    @property
    def closing(self) -> str:
        """Sorted set: block id -> when its mentor's grace ends (ms since the epoch)."""
        return f"{self.prefix}:closing"

    def reap_lock(self, gateway_id: str) -> str:
        """Short lock so that one gateway at a time reaps a dead one."""
        return f"{self.prefix}:reap:{gateway_id}"

    @property
    def relay_hello(self) -> str:
        """Pub/sub channel nobody publishes on: the subscriber's own, so its connection is
        in subscribe mode (and confirmed) even when the gateway serves no room."""
        return f"{self.prefix}:relay:hello"

    def block_copy(self, block_id: str) -> str:
        """String (short TTL): a copy of a block's template and solution for room opens.

        Next to the room's keys (same hash tag), never touched by the room scripts."""
        return f"{self.prefix}:{{room:{block_id}}}:block"

    def block_load_lock(self, block_id: str) -> str:
        """String (``SET NX PX``): the gateway reading the block from MongoDB right now,
        so that the fleet's others wait for its `block_copy` instead of reading too."""
        return f"{self.prefix}:{{room:{block_id}}}:block:loading"

    @property
    def blocks_generation(self) -> str:
        """Counter bumped by every admin write of a code block (api caches compare it)."""
        return f"{self.prefix}:blocks:gen"

    @property
    def archive_queue(self) -> str:
        """Stream of closed sessions waiting for MongoDB (consumer group `ARCHIVE_GROUP`).

        The fixed hash tag ``{archive}`` keeps it and `archive_refused` in one cluster
        slot, so the enqueue script and every stream command stay single-slot."""
        return f"{self.prefix}:{{archive}}:queue"

    @property
    def archive_refused(self) -> str:
        """Counter of records refused because the archive queue was full."""
        return f"{self.prefix}:{{archive}}:refused"

    @lru_cache(maxsize=16384)  # noqa: B019 - as room(): Keys live as long as the process
    def room_from_channel(self, channel: str) -> str | None:
        """Block id of a room channel name, or None if it is not one of ours."""
        head = f"{self.prefix}:{{room:"
        if channel.startswith(head) and channel.endswith("}:ch"):
            return channel[len(head) : -len("}:ch")]
        return None
