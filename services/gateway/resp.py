"""The Redis protocol (RESP) for the gateway's own connections.

The hot-path writer (``writer.py``) and the pub/sub subscriber (``relay.py``) speak RESP
over their own asyncio protocols rather than redis-py's (each says why). What they share
lives here, once: the command encoder, the server a ``REDIS_URL`` names (TCP or unix
socket, TLS, AUTH with or without a user name, db), the connect routine that opens and
authenticates a connection, and the jittered backoff of their reconnect loops.

An ``Endpoint`` is one server. A Redis Cluster client would keep one per shard
(``Endpoint.at`` moves the address and keeps credentials and TLS) and one connection per
endpoint; nothing here assumes a single server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.backoff import EqualJitterBackoff
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

log = logging.getLogger(__name__)
_parse_url = cast(Callable[[str], dict[str, Any]], parse_url)

Callback = Callable[[Any], None]  # gets the reply, or an exception

# Reconnect delays: about 50 ms doubling up to 2 s, each between half and all of that
# (jitter, so that the gateways of a fleet do not reconnect in step after a Redis restart).
_BACKOFF = EqualJitterBackoff(cap=2.0, base=0.05)


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before the next attempt after ``failures`` failed ones (>= 1)."""
    return float(_BACKOFF.compute(max(0, failures - 1)))


def encode_command(*parts: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Redis server and how to talk to it, as a ``REDIS_URL`` describes it."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket (unix://); host and port are then unused
    tls: bool = False  # rediss://
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    db: int = 0
    ca_file: str | None = None  # ?ssl_ca_certs=
    verify: bool = True  # ?ssl_cert_reqs=none turns certificate checks off
    cert_file: str | None = None  # ?ssl_certfile= : a client certificate (tls-auth-clients)
    key_file: str | None = None  # ?ssl_keyfile= : its key (default: in the certificate file)

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Read a URL the way redis-py does (``redis://``, ``rediss://``, ``unix://``)."""
        # redis-py's reading of the URL, so the pool and these connections agree (it
        # raises ValueError on another scheme; redis-py leaves it unannotated).
        options = _parse_url(url)
        connection_class = options.get("connection_class")
        reqs = str(options.get("ssl_cert_reqs", "required")).lower()
        return cls(
            host=str(options.get("host") or "127.0.0.1"),
            port=int(options.get("port") or 6379),
            path=options.get("path") if connection_class is UnixDomainSocketConnection else None,
            tls=connection_class is SSLConnection,
            username=options.get("username") or None,
            password=options.get("password"),
            db=int(options.get("db") or 0),
            ca_file=options.get("ssl_ca_certs"),
            verify=reqs not in ("none", "cert_none", "0"),
            cert_file=options.get("ssl_certfile"),
            key_file=options.get("ssl_keyfile"),
        )

    def at(self, host: str, port: int) -> Endpoint:
        """The same credentials and TLS at another address (another shard)."""
        return dataclasses.replace(self, host=host, port=port, path=None)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def setup(self) -> list[tuple[str, ...]]:
        """The commands that make a new connection ready: AUTH, then SELECT."""
        commands: list[tuple[str, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", str(self.db)))
        return commands

    def __str__(self) -> str:
        where = f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"{'rediss' if self.tls else 'redis'} {where}/{self.db}"


class RedisRefused(ConnectionError):
    """Redis answered a setup command (AUTH, SELECT, SUBSCRIBE) with an error."""


class RespConnection(asyncio.Protocol):
    """One connection. hiredis parses replies as bytes arrive; each reply goes, in
    order, to the callback of the oldest command still waiting (``reply_received``)."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self.pending: deque[Callback] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            self.reply_received(reply)

    def reply_received(self, reply: Any) -> None:
        if not self.pending:
            self.unsolicited(reply)
            return
        try:
            self.pending.popleft()(reply)
        except Exception:
            log.exception("redis reply callback failed")

    def unsolicited(self, reply: Any) -> None:
        """A reply nobody waits for (the further confirmations of a multi-channel
        SUBSCRIBE, say); errors are worth a line in the log."""
        if isinstance(reply, Exception):
            log.error("error from redis: %s", reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        failure = ConnectionError(f"redis connection lost: {exc}")
        while self.pending:
            try:
                self.pending.popleft()(failure)
            except Exception:
                log.exception("redis reply callback failed")
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def writable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def send(self, command: bytes, callback: Callback | None = None) -> None:
        """Write an encoded command now; ``callback`` gets its reply or an exception."""
        if not self.writable:
            if callback is not None:
                callback(ConnectionError("redis not connected"))
            return
        if callback is not None:
            self.pending.append(callback)
        assert self.transport is not None
        self.transport.write(command)

    def send_many(self, commands: list[tuple[bytes, Callback]]) -> None:
        """Several commands in one write (one syscall)."""
        if not self.writable:
            for _, callback in commands:
                callback(ConnectionError("redis not connected"))
            return
        self.pending.extend(callback for _, callback in commands)
        assert self.transport is not None
        self.transport.write(b"".join(command for command, _ in commands))

    async def request(self, *parts: bytes | str | int) -> Any:
        """Send one command and wait for its reply; an error reply raises RedisRefused."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send(encode_command(*parts), reply.set_result)
        answer = await reply
        if isinstance(answer, ConnectionError) and not isinstance(answer, RedisRefused):
            raise answer
        if isinstance(answer, Exception):
            raise RedisRefused(f"redis refused {parts[0]!r}: {answer}")
        return answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect[C: RespConnection](
    endpoint: Endpoint, factory: Callable[[], C], connect_timeout: float
) -> C:
    """Open a connection to ``endpoint`` and authenticate it (raises OSError,
    TimeoutError or ConnectionError; RedisRefused when a setup command is refused)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        context = endpoint.ssl_context()
        if endpoint.path is not None:
            _, conn = await loop.create_unix_connection(factory, endpoint.path, ssl=context)
        else:
            _, conn = await loop.create_connection(
                factory, endpoint.host, endpoint.port, ssl=context
            )
        try:
            for command in endpoint.setup():
                await conn.request(*command)
        except BaseException:
            conn.close()
            raise
    return conn
