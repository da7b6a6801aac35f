"""A lean, always-pipelined Redis connection for the gateway's hot path.

Every keystroke ends as one EVALSHA. redis-py's pipeline costs a coroutine, a lock and a
command stack per round trip; here a command is encoded and written at once, and its
reply, parsed by hiredis as bytes arrive, is handed to the caller's callback in order.
Redis runs the commands of one connection in order, so a room's batches keep their order
without waiting for each other. Everything else (joins, housekeeping) uses redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]  # gets the reply, or an exception


def encode_command(*parts: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, bytes):
            data = part
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = b"%d" % part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[Callback] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while (reply := reader.gets()) is not False:
            callback = pending.popleft()
            try:
                callback(reply)
            except Exception:
                log.exception("redis reply callback failed")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        failure = ConnectionError(f"redis connection lost: {exc}")
        while self.pending:
            try:
                self.pending.popleft()(failure)
            except Exception:
                log.exception("redis reply callback failed")


class Pipeline:
    """One connection; ``send`` queues a command and its callback, never waits."""

    def __init__(self, redis_url: str, connect_timeout: float = 2.0) -> None:
        self._url = urlparse(redis_url)
        self._timeout = connect_timeout
        self._conn: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.lost

    async def connect(self) -> None:
        """Make sure a connection is up (raises OSError/TimeoutError/ConnectionError)."""
        if self.connected:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._open())
        self._conn = await asyncio.shield(self._connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        url = self._url
        context = ssl.create_default_context() if url.scheme == "rediss" else None
        async with asyncio.timeout(self._timeout):
            _, conn = await loop.create_connection(
                _Protocol, url.hostname or "127.0.0.1", url.port or 6379, ssl=context
            )
            setup: list[tuple[Any, ...]] = []
            if url.password is not None:
                password = unquote(url.password)
                user = unquote(url.username) if url.username else None
                setup.append(("AUTH", user, password) if user else ("AUTH", password))
            db = url.path.lstrip("/")
            if db and db != "0":
                setup.append(("SELECT", db))
            for command in setup:
                reply: asyncio.Future[Any] = loop.create_future()
                conn.pending.append(reply.set_result)
                assert conn.transport is not None
                conn.transport.write(encode_command(*command))
                answer = await reply
                if isinstance(answer, Exception):
                    conn.transport.close()
                    raise ConnectionError(f"redis refused {command[0]}: {answer}")
        return conn

    def send(self, command: bytes, callback: Callback) -> None:
        """Write an encoded command now; ``callback`` gets its reply or an exception."""
        conn = self._conn
        if conn is None or conn.lost or conn.transport is None:
            callback(ConnectionError("redis not connected"))
            return
        conn.pending.append(callback)
        conn.transport.write(command)

    def send_many(self, commands: list[tuple[bytes, Callback]]) -> None:
        """Several commands in one write (one syscall)."""
        conn = self._conn
        if conn is None or conn.lost or conn.transport is None:
            for _, callback in commands:
                callback(ConnectionError("redis not connected"))
            return
        conn.pending.extend(callback for _, callback in commands)
        conn.transport.write(b"".join(command for command, _ in commands))

    def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
