"""A lean, always-pipelined Redis connection for the gateway's hot path.

Every keystroke ends as one EVALSHA. redis-py's pipeline costs a coroutine, a lock and a
command stack per round trip; here a command is encoded and written at once, and its
reply, parsed by hiredis as bytes arrive, is handed to the caller's callback in order.
Redis runs the commands of one connection in order, so a room's batches keep their order
without waiting for each other. Everything else (joins, housekeeping) uses redis-py.
The wire code (encoder, connect, AUTH/TLS/db) is ``resp.py``'s.
"""

from __future__ import annotations

import asyncio

from services.gateway.resp import Callback, Endpoint, RespConnection, connect


class RedisWriter:
    """One connection to one endpoint; ``send`` queues a command and its callback,
    never waits. (Not redis-py's ``pipeline()``: nothing is buffered until an execute.)"""

    def __init__(self, endpoint: Endpoint, connect_timeout: float = 2.0) -> None:
        self.endpoint = endpoint
        self._timeout = connect_timeout
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.lost

    async def connect(self) -> None:
        """Make sure a connection is up (raises OSError/TimeoutError/ConnectionError)."""
        if self.connected:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(
                connect(self.endpoint, RespConnection, self._timeout)
            )
        self._conn = await asyncio.shield(self._connecting)

    def send(self, command: bytes, callback: Callback) -> None:
        """Write an encoded command now; ``callback`` gets its reply or an exception."""
        if self._conn is None:
            callback(ConnectionError("redis not connected"))
            return
        self._conn.send(command, callback)

    def send_many(self, commands: list[tuple[bytes, Callback]]) -> None:
        """Several commands in one write (one syscall)."""
        if self._conn is None:
            for _, callback in commands:
                callback(ConnectionError("redis not connected"))
            return
        self._conn.send_many(commands)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
