"""A primary, its replica and a failover, with real redis-server processes.

`RedisNode(tmp_dir, *args)` a `RedisServer` started with extra arguments (a replica:
``"--replicaof", host, port``); ``.info(section)``, ``.promote()`` (``REPLICAOF NO ONE``).
`Forwarder(backend_port)` a TCP forwarder in a thread of its own, so that a process
pointed at one address (a gateway's ``REDIS_URL``, a replica's ``replicaof``) can be
moved to another server: ``.switch(port)`` drops every connection and sends the next
ones to ``port``. Between a primary and its replica (``replication=True``: it follows
the replication stream from its first byte), ``.hold_xadd_to(key)`` lets the stream
through up to the first ``XADD`` to ``key`` (with the rest of its ``MULTI``/``EXEC``)
and keeps that and everything after it from the replica: the primary has acknowledged
the entry, the replica will never get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from tests.infra import LOCALHOST, RedisServer, free_port, wait_until


class RedisNode(RedisServer):
    """A real redis-server (no persistence) with extra command-line arguments."""

    def __init__(self, tmp_dir: Path, *args: str) -> None:
        super().__init__(tmp_dir)
        self.args = [*args, "--repl-diskless-sync-delay", "0"]

    def start(self, timeout: float = 10.0) -> Self:
        from services.embedded import redis_server_argv

        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        argv = redis_server_argv(executable, self.port, self.tmp_dir / "redis-data")
        self._spawn([*argv, *self.args])
        try:
            wait_until(self.ping, timeout, message=f"redis on port {self.port}")
        except TimeoutError:
            raise self._failed("did not answer PING") from None
        return self

    def info(self, section: str = "replication") -> dict[str, Any]:
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def promote(self) -> None:
        client = self.client()
        try:
            client.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            client.close()


def _command(buf: bytearray) -> tuple[list[bytes], int] | None:
    """The RESP array of bulk strings at the start of buf and its length, or None if it
    is not complete yet."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    count, at, parts = int(buf[1:end]), end + 2, []
    for _ in range(count):
        head = buf.find(b"\r\n", at)
        if head < 0:
            return None
        if buf[at : at + 1] != b"$":
            raise ValueError(f"not a bulk string in the replication stream: {buf[at:head]!r}")
        size = int(buf[at + 1 : head])
        start, stop = head + 2, head + 2 + size
        if len(buf) < stop + 2:
            return None
        parts.append(bytes(buf[start:stop]))
        at = stop + 2
    return parts, at


class _Replication:
    """Follows a primary's replication stream from its first byte (the PSYNC answer, the
    RDB payload, then commands) and passes it command by command (a MULTI/EXEC as one)
    until `key()` names a key and a command is an XADD to it; from there on it keeps
    everything from the replica."""

    def __init__(self, key: Callable[[], bytes | None], held: threading.Event) -> None:
        self.key = key
        self.held = held
        self.state = "preamble"  # then "rdb", then "commands"
        self.eof_mark = b""  # diskless payloads end with the 40 bytes after "$EOF:"
        self.rdb_left = 0
        self.buf = bytearray()
        self.group: list[tuple[list[bytes], bytes]] | None = None
        self.kept = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.held.is_set():
            self.kept += data
            return b""
        self.buf += data
        out = bytearray()
        while self.buf and not self.held.is_set() and self._step(out):
            pass
        return bytes(out)

    def _pass(self, n: int, out: bytearray) -> None:
        out += self.buf[:n]
        del self.buf[:n]

    def _step(self, out: bytearray) -> bool:
        """Consume one piece of the stream into `out`; False if more bytes are needed."""
        if self.state == "preamble":
            if self.buf[:1] == b"\n":  # keepalive while the primary prepares the RDB
                self._pass(1, out)
                return True
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(self.buf[:end])
            if line.startswith(b"$EOF:"):
                self.state, self.eof_mark = "rdb", line[5:]
            elif line.startswith(b"$"):
                self.state, self.rdb_left = "rdb", int(line[1:])
            elif line.startswith(b"+CONTINUE"):
                self.state = "commands"
            self._pass(end + 2, out)
            return True
        if self.state == "rdb":
            if self.eof_mark:
                at = self.buf.find(self.eof_mark)
                if at < 0:
                    self._pass(max(0, len(self.buf) - len(self.eof_mark)), out)
                    return False
                self._pass(at + len(self.eof_mark), out)
            else:
                take = min(self.rdb_left, len(self.buf))
                self._pass(take, out)
                self.rdb_left -= take
                if self.rdb_left:
                    return False
            self.state = "commands"
            return True
        if self.buf[:1] == b"\n":
            self._pass(1, out)
            return True
        parsed = _command(self.buf)
        if parsed is None:
            return False
        parts, size = parsed
        raw = bytes(self.buf[:size])
        del self.buf[:size]
        name = parts[0].upper()
        if self.group is not None:
            self.group.append((parts, raw))
            if name == b"EXEC":
                self._emit(self.group, out)
                self.group = None
        elif name == b"MULTI":
            self.group = [(parts, raw)]
        else:
            self._emit([(parts, raw)], out)
        return True

    def _emit(self, commands: list[tuple[list[bytes], bytes]], out: bytearray) -> None:
        key = self.key()
        if key is not None and any(
            p[0].upper() == b"XADD" and p[1:2] == [key] for p, _ in commands
        ):
            self.held.set()
            self.kept += b"".join(raw for _, raw in commands) + self.buf
            self.buf.clear()
            return
        out += b"".join(raw for _, raw in commands)


class _Tracked(asyncio.StreamReaderProtocol):
    """A server-side stream whose transport the forwarder knows from its first moment,
    so that stopping closes it even if its handler never ran."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__(asyncio.StreamReader(), forwarder._accept)
        self._forwarder = forwarder

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._forwarder._transports.add(transport)
        super().connection_made(transport)


class Forwarder:
    """A TCP forwarder on a free loopback port, run by an event loop in its own thread."""

    def __init__(self, backend_port: int, replication: bool = False) -> None:
        self.port = free_port()
        self.replication = replication
        self.backend = backend_port
        self.held = threading.Event()
        self._hold_key: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._transports: set[asyncio.BaseTransport] = set()  # every one, both sides
        self._server: asyncio.Server | None = None

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        self._server = await self._loop.create_server(lambda: _Tracked(self), LOCALHOST, self.port)

    def hold_xadd_to(self, key: str) -> None:
        """From now on, keep from the clients the backend's bytes from the first XADD to
        `key` on (sets `held` when that happens)."""
        self._hold_key = key.encode()

    def switch(self, port: int) -> None:
        """Send new connections to `port`; drop the open ones."""
        self.backend = port
        self._call(self._drop_all())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        # A connection accepted while closing (a replica reconnecting at once) starts
        # its task after any snapshot of the tasks: look again until none is left.
        while pending := [t for t in asyncio.all_tasks() if t is not current]:
            await self._drop_all()
            await asyncio.wait(pending, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.sleep(0)
        for transport in self._transports:
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        self._transports.clear()
        for _ in range(3):  # the transports' connection_lost callbacks close the sockets
            await asyncio.sleep(0)

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()  # not close(): that waits for unsent bytes
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backend
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(LOCALHOST, backend)
            self._writers.add(up_writer)
            self._transports.add(up_writer.transport)
            if self.backend != backend:  # switched while connecting
                return
            follow = _Replication(lambda: self._hold_key, self.held) if self.replication else None
            await asyncio.gather(
                self._pump(reader, up_writer, None), self._pump(up_reader, writer, follow)
            )
        except OSError:
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
                    with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                        await w.wait_closed()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        follow: _Replication | None,
    ) -> None:
        """Until either side closes; then closes the other (its pump ends too)."""
        try:
            while data := await source.read(65536):
                if follow is not None:
                    data = follow.feed(data)
                if data:
                    sink.write(data)
                    await sink.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            sink.close()
