"""The room socket: websockets' server connection with a synchronous message path.

websockets hands every received message to an assembler queue that the connection's
handler task awaits: a future, a task wake-up and a coroutine round per message, and an
``async for`` chain of coroutines kept alive on every idle socket. A room socket's
messages are small, whole binary frames; once the socket is in its room (``listener``
set) and nothing is waiting in the queue, ``RoomConnection`` gives such a frame to
``listener.message`` in the same event-loop callback that read it. Anything else (a
message that arrived before the socket joined, a text frame, a fragmented message) takes
websockets' ordinary path and counts in ``backlog`` until the handler has read it with
``recv``; while the backlog is not empty every message queues behind it, so messages
never overtake each other. ``listener.wake`` tells the handler that something queued or
that the connection is gone.
"""

from __future__ import annotations

from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event


class Listener(Protocol):
    def message(self, data: bytes) -> None: ...
    def wake(self) -> None: ...


_BINARY = Opcode.BINARY
_TEXT = Opcode.TEXT


class RoomConnection(ServerConnection):
    # Slots, not instance attributes: websockets' connection already sets 27 attributes
    # and CPython keeps at most 30 keys shared between a class's instances (inline
    # values); one more (``heartbeat`` did it) gives every socket its own attribute dict,
    # +2.5 KB per connection (docs/bench/README.md, "What was tried").
    __slots__ = ("backlog", "heartbeat", "listener", "heard")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener: Listener | None = None  # set while the handler reads the room
        self.backlog = 0  # messages queued for ``recv`` (or arriving) and not read
        self.heartbeat = False  # the client asked for heartbeat events (?heartbeat=1)
        self.heard = False  # a message came since the keepalive's last visit (no ping needed)

    def process_event(self, event: Event) -> None:
        if type(event) is Frame:
            opcode = event.opcode
            if opcode is _BINARY and event.fin and not self.backlog:
                self.heard = True
                listener = self.listener
                if listener is not None:
                    data = event.data
                    listener.message(data if type(data) is bytes else bytes(data))
                    return
            if opcode is _BINARY or opcode is _TEXT:
                self.heard = True
                self.backlog += 1  # a message starts (whole, or its first fragment)
                super().process_event(event)
                if self.listener is not None:
                    self.listener.wake()
                return
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.listener is not None:
            self.listener.wake()
