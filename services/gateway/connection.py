"""The room socket: websockets' server connection with a synchronous message path.

websockets hands every received message to an assembler queue that the connection's
handler task awaits: a future, a task wake-up and a coroutine round per message. A room
socket's messages are small, whole binary frames; once the socket is in its room
(``on_message`` set) and nothing is waiting in the queue, ``RoomConnection`` gives such
a frame to ``on_message`` in the same event-loop callback that read it. Anything else (a
message that arrived before the socket joined, a text frame, a fragmented message) takes
websockets' ordinary path and counts in ``backlog`` until the handler has read it with
``async for``; while the backlog is not empty every message queues behind it, so
messages never overtake each other.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

OnMessage = Callable[[bytes], None]
_BINARY = Opcode.BINARY
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class RoomConnection(ServerConnection):
    on_message: OnMessage | None = None  # set while the handler reads the room socket
    backlog = 0  # whole messages queued for ``async for`` and not read yet
    _fragmented = False  # a fragmented message is being received

    def process_event(self, event: Event) -> None:
        if type(event) is Frame:
            opcode = event.opcode
            if opcode is _BINARY and event.fin and not self.backlog and not self._fragmented:
                on_message = self.on_message
                if on_message is not None:
                    data = event.data
                    on_message(data if type(data) is bytes else bytes(data))
                    return
            if opcode in _DATA:
                if event.fin:
                    self.backlog += 1
                    self._fragmented = False
                else:
                    self._fragmented = True
        super().process_event(event)
