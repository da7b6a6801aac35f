"""Room fan-out between gateways over Redis pub/sub.

Guarantee: at most once, in order per room channel (Redis pub/sub). Durability comes
from the room log, not from here: the hub reads the log when it sees a sequence gap,
and ``on_reconnect`` is called after every reconnect of the pub/sub connection so the
hub can re-register its members and read what it missed. A gateway subscribes only to
the channels of rooms it serves.

The subscriber is a small asyncio protocol over one connection, parsing with hiredis
and dispatching each message synchronously as it is parsed: every update of every
served room passes here, and redis-py's PubSub costs a coroutine round per message.

The listener never dies silently: a lost connection is retried with backoff, and
``healthy`` is false (readiness fails) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


def _command(*parts: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Subscriber(asyncio.Protocol):
    def __init__(self, on_message: Handler, lost: asyncio.Future[None]) -> None:
        self._reader = hiredis.Reader()
        self._on_message = on_message
        self._lost = lost
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[Any] | None = None  # a reply awaited during setup

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        on_message = self._on_message
        while (reply := reader.gets()) is not False:
            if isinstance(reply, list) and reply and reply[0] == b"message":
                try:
                    on_message(reply[1].decode(), reply[2])
                except Exception:
                    log.exception("handling a message on %s failed", reply[1])
            elif self.waiting is not None and not self.waiting.done():
                self.waiting.set_result(reply)  # AUTH/subscribe confirmation during setup
            elif isinstance(reply, Exception):
                log.error("pub/sub error from redis: %s", reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    def send(self, *parts: bytes | str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_command(*parts))

    async def ask(self, *parts: bytes | str) -> Any:
        """Send a command and wait for its (first) reply; only during setup."""
        self.waiting = asyncio.get_running_loop().create_future()
        self.send(*parts)
        reply = await self.waiting
        self.waiting = None
        if isinstance(reply, Exception):
            raise ConnectionError(f"redis refused {parts[0]!r}: {reply}")
        return reply


class Relay:
    def __init__(
        self,
        redis_url: str,
        on_message: Handler,
        on_reconnect: Callable[[], Coroutine[Any, Any, None]],
        connect_timeout: float = 2.0,
    ) -> None:
        self._url = urlparse(redis_url)
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._connect_timeout = connect_timeout
        self._channels: set[str] = set()
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
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._conn is not None and self.healthy:
            self._conn.send("SUBSCRIBE", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._conn is not None and self.healthy:
            self._conn.send("UNSUBSCRIBE", channel)

    async def _connect(self) -> tuple[_Subscriber, asyncio.Future[None], set[str]]:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        url = self._url
        context = ssl.create_default_context() if url.scheme == "rediss" else None
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Subscriber(self._on_message, lost),
                url.hostname or "127.0.0.1",
                url.port or 6379,
                ssl=context,
            )
            if url.password is not None:
                user = unquote(url.username) if url.username else None
                password = unquote(url.password)
                await conn.ask(*(("AUTH", user, password) if user else ("AUTH", password)))
            # Subscribe to a private channel too, so the connection is in subscribe
            # mode (and confirmed working) even when the gateway serves no room yet.
            sent = set(self._channels)
            await conn.ask("SUBSCRIBE", "coderoom:relay:hello", *sorted(sent))
        return conn, lost, sent

    async def _run(self) -> None:
        delay = 0.05
        first = True
        while True:
            try:
                conn, lost, sent = await self._connect()
            except (OSError, TimeoutError, ConnectionError) as exc:
                if first or self.healthy:
                    log.error("pub/sub connection failed: %s", exc)
                self.healthy = False
                first = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._conn = conn
            self.healthy = True
            delay = 0.05
            # Rooms opened or dropped while the connection was being set up.
            if added := self._channels - sent:
                conn.send("SUBSCRIBE", *sorted(added))
            if dropped := sent - self._channels:
                conn.send("UNSUBSCRIBE", *sorted(dropped))
            if not first:
                log.warning("pub/sub reconnected; resyncing %d rooms", len(self._channels))
                self._resync = asyncio.create_task(self._on_reconnect())
            first = False
            await lost
            self.healthy = False
            self._conn = None
            log.error("pub/sub connection lost")
