"""A primary, its replica and a failover, with real redis-server processes.

`RedisNode(tmp_dir, *args)` a `RedisServer` started with extra arguments (a replica:
``"--replicaof", host, port``); ``.info(section)``, ``.promote()`` (``REPLICAOF NO ONE``).
`Forwarder(backend_port)` a TCP forwarder in a thread of its own, so that a process
pointed at one address (a gateway's ``REDIS_URL``, a replica's ``replicaof``) can be
moved to another server: ``.switch(port)`` drops every connection and sends the next
ones to ``port``. Between a primary and its replica, ``.hold_xadd_to(key)`` lets the
replication stream through up to the first ``XADD`` to ``key`` (with the rest of its
``MULTI``/``EXEC``) and keeps that and everything after it from the replica: the
primary has acknowledged the entry, the replica will never get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
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


class _Hold:
    """Passes a replication stream command by command (a MULTI/EXEC as one) until one
    is an XADD to the key; from there on it keeps everything."""

    def __init__(self, key: bytes, held: threading.Event) -> None:
        self.key = key
        self.held = held
        self.buf = bytearray()
        self.group: list[tuple[list[bytes], bytes]] | None = None
        self.kept = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.held.is_set():
            self.kept += data
            return b""
        self.buf += data
        out = bytearray()
        while self.buf and not self.held.is_set():
            if self.buf[:1] != b"*":  # a keepalive newline between commands
                star = self.buf.find(b"*")
                cut = len(self.buf) if star < 0 else star
                out += self.buf[:cut]
                del self.buf[:cut]
                continue
            parsed = _command(self.buf)
            if parsed is None:
                break
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
        return bytes(out)

    def _emit(self, commands: list[tuple[list[bytes], bytes]], out: bytearray) -> None:
        if any(p[0].upper() == b"XADD" and p[1:2] == [self.key] for p, _ in commands):
            self.held.set()
            self.kept += b"".join(raw for _, raw in commands) + self.buf
            self.buf.clear()
            return
        out += b"".join(raw for _, raw in commands)


class Forwarder:
    """A TCP forwarder on a free loopback port, run by an event loop in its own thread."""

    def __init__(self, backend_port: int) -> None:
        self.port = free_port()
        self.backend = backend_port
        self.held = threading.Event()
        self._hold_key: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOCALHOST, self.port)

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

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOCALHOST, self.backend)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer, False), self._pump(up_reader, writer, True)
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, downstream: bool
    ) -> None:
        hold: _Hold | None = None
        try:
            while data := await source.read(65536):
                if downstream and hold is None and self._hold_key is not None:
                    hold = _Hold(self._hold_key, self.held)  # armed: from this chunk on
                if hold is not None:
                    data = hold.feed(data)
                if data:
                    sink.write(data)
                    await sink.drain()
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(sink)
            sink.close()
            with contextlib.suppress(OSError, ConnectionError):
                await sink.wait_closed()
