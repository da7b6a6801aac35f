"""Room fan-out between gateways over Redis pub/sub.

Guarantee: at most once, in order per room channel (Redis pub/sub). Durability comes
from the room log, not from here: a room reads its log when it sees a sequence gap,
and ``on_reconnect`` is called after every reconnect of the pub/sub connection so the
gateway can re-register its members and read what it missed. A gateway subscribes only
to the channels of rooms it serves.

The subscriber is a small asyncio protocol over one connection (``resp.py``),
dispatching each message synchronously as hiredis parses it: every update of every
served room passes here, and redis-py's PubSub costs a coroutine round per message.

The listener never dies silently: a lost connection is retried with jittered backoff,
and ``healthy`` is false (readiness fails) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from services.gateway.resp import Endpoint, RespConnection, connect, encode_command, reconnect_delay

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class _Subscriber(RespConnection):
    def __init__(self, on_message: Handler) -> None:
        super().__init__()
        self._on_message = on_message

    def reply_received(self, reply: Any) -> None:
        if isinstance(reply, list) and reply and reply[0] == b"message":
            try:
                self._on_message(reply[1].decode(), reply[2])
            except Exception:
                log.exception("handling a message on %s failed", reply[1])
        else:
            super().reply_received(reply)  # a confirmation (or error) of a command


class Subscriptions:
    """The room channels this gateway wants. The rooms change it; the relay carries it
    out on its connection while it has one, and in full on every (re)connect."""

    def __init__(self) -> None:
        self.channels: set[str] = set()
        self.conn: RespConnection | None = None  # the relay's, while it is healthy

    def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        if self.conn is not None:
            self.conn.send(encode_command("SUBSCRIBE", channel))

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.conn is not None:
            self.conn.send(encode_command("UNSUBSCRIBE", channel))


class Relay:
    def __init__(
        self,
        endpoint: Endpoint,
        hello_channel: str,
        subscriptions: Subscriptions,
        on_message: Handler,
        on_reconnect: Callable[[], Coroutine[Any, Any, None]],
        connect_timeout: float = 2.0,
    ) -> None:
        self._endpoint = endpoint
        self._hello = hello_channel
        self._subs = subscriptions
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._connect_timeout = connect_timeout
        self._conn: _Subscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self.healthy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()

    async def _connect(self) -> tuple[_Subscriber, set[str]]:
        conn = await connect(
            self._endpoint, lambda: _Subscriber(self._on_message), self._connect_timeout
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                # The private channel puts the connection in subscribe mode (and confirms
                # it works) even when the gateway serves no room yet.
                sent = set(self._subs.channels)
                await conn.request("SUBSCRIBE", self._hello, *sorted(sent))
        except BaseException:
            conn.close()
            raise
        return conn, sent

    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            try:
                conn, sent = await self._connect()
            except (OSError, TimeoutError, ConnectionError) as exc:
                if first or self.healthy:
                    log.error("pub/sub connection failed: %s", exc)
                self.healthy = False
                first = False
                failures += 1
                await asyncio.sleep(reconnect_delay(failures))
                continue
            self._conn = self._subs.conn = conn
            self.healthy = True
            failures = 0
            # Rooms opened or dropped while the connection was being set up.
            wanted = self._subs.channels
            if added := wanted - sent:
                conn.send(encode_command("SUBSCRIBE", *sorted(added)))
            if dropped := sent - wanted:
                conn.send(encode_command("UNSUBSCRIBE", *sorted(dropped)))
            if not first:
                log.warning("pub/sub reconnected; resyncing %d rooms", len(wanted))
                self._resync = asyncio.create_task(self._on_reconnect())
            first = False
            await conn.closed
            self.healthy = False
            self._conn = self._subs.conn = None
            log.error("pub/sub connection lost")
