"""Attack tools for the hardening tests: a raw websocket client and process probes.

`RawSocket` speaks RFC 6455 by hand over an asyncio stream so a test can send what no
well-behaved client library would (truncated frames, anything as a frame, never
reading) and read the server's close code exactly. Client frames are masked as the RFC
requires (a zero key: cheap, and the payload stays readable in captures). Every timeout
here goes through `scaled`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from shared import protocol
from shared.protocol import MessageType
from shared.ywire import read_var_uint
from tests.infra import scaled, scrape

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
NO_CLOSE = 1006  # the connection ended without a close frame
NO_ANSWER = -1  # nothing (no close, no EOF) within the timeout: the server hangs


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def closes(base_http: str, code: int) -> float:
    return scrape(base_http).get(f'coderoom_gateway_closes_total{{code="{code}"}}', 0.0)


def frame(payload: bytes, opcode: int = OP_BINARY, fin: bool = True) -> bytes:
    """One masked client frame (mask key 0)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\x00\x00\x00\x00" + payload


@dataclass
class Handshake:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    handshake: Handshake
    received: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    welcome: dict[str, object] = field(default_factory=dict)  # set by `raw_join`

    @property
    def open(self) -> bool:
        return self.handshake.status == 101

    async def send(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            self.writer.write(frame(payload.encode(), OP_TEXT))
        else:
            self.writer.write(frame(payload))
        await self.writer.drain()

    @property
    def reader_transport(self) -> asyncio.Transport:
        transport = self.writer.transport
        assert isinstance(transport, asyncio.Transport)
        return transport

    def send_nowait(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def until_closed(self, timeout: float = 10.0) -> int:
        """Read (and keep) every frame until the server's close frame; its code."""
        try:
            async with asyncio.timeout(scaled(timeout)):
                while True:
                    op, data = await self.read_frame()
                    if op == OP_CLOSE:
                        code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                        self.close_code = code
                        try:
                            self.writer.write(frame(data[:2], OP_CLOSE))
                            await self.writer.drain()
                        except (ConnectionError, RuntimeError):
                            pass
                        return code
                    if op == OP_PING:
                        self.writer.write(frame(data, OP_PONG))
                    elif op in (OP_BINARY, OP_TEXT):
                        self.received.append(data)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close_code = NO_CLOSE
            return NO_CLOSE
        except TimeoutError:
            self.close_code = NO_ANSWER
            return NO_ANSWER
        finally:
            self.abort()

    async def read_until(self, kind: str, timeout: float = 10.0) -> dict[str, object]:
        """Read frames until a control event of this type arrives."""
        async with asyncio.timeout(scaled(timeout)):
            while True:
                op, data = await self.read_frame()
                if op == OP_CLOSE:
                    self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    raise ConnectionError(f"closed with {self.close_code} waiting for {kind}")
                if op != OP_BINARY:
                    continue
                self.received.append(data)
                if read_var_uint(data, 0)[0] == MessageType.CONTROL:
                    event = protocol.decode_control(data)
                    if event["type"] == kind:
                        return event

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


async def raw_connect(
    ws_base: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    rcvbuf: int | None = None,
    timeout: float = 10.0,
) -> RawSocket:
    """Open a TCP connection to ``ws://host:port`` and send the upgrade for ``path``."""
    hostport = ws_base.removeprefix("ws://").split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    sock = None
    if rcvbuf is not None:
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**22)
    else:
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**22)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {hostport}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    async with asyncio.timeout(scaled(timeout)):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()
            return RawSocket(reader, writer, Handshake(0, {}))  # dropped without an answer
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        parsed = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                parsed[k.strip().lower()] = v.strip()
        body = b""
        if status != 101 and "content-length" in parsed:
            body = await reader.readexactly(int(parsed["content-length"]))
    return RawSocket(reader, writer, Handshake(status, parsed, body))


async def raw_join(
    ws_base: str, block_id: str, query: str = "", *, rcvbuf: int | None = None
) -> RawSocket:
    """`raw_connect` to the room of `block_id` (`query` as "?client=..."), check the
    upgrade, and read up to the ``welcome`` (kept in ``.welcome``)."""
    sock = await raw_connect(ws_base, f"/ws/rooms/{block_id}{query}", rcvbuf=rcvbuf)
    assert sock.open, sock.handshake
    sock.welcome = await sock.read_until("welcome")
    return sock
