"""services.gateway.resp (and the writer and relay built on it) against a real redis-server:
every part of REDIS_URL honoured (unix socket, TLS, AUTH with a user, db), the encoder,
the jittered backoff, the relay's private channel under the configured prefix."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import redis

from services.embedded import redis_server_argv
from services.gateway.relay import Relay, Subscriptions
from services.gateway.resp import (
    Endpoint,
    RedisRefused,
    RespConnection,
    connect,
    encode_command,
    reconnect_delay,
)
from services.gateway.writer import RedisWriter
from shared.keys import Keys
from shared.redisconn import hot_path
from shared.settings import load_settings
from tests.infra import LOCALHOST, RedisServer, await_until, scaled, unique_name, wait_until

USER, PASSWORD = "gw", "s3cret:@/"  # a password that needs escaping in a URL
QUOTED = "s3cret%3A%40%2F"


class ConfiguredRedis(RedisServer):
    """A redis-server with a unix socket, an ACL user, a default password and TLS."""

    def __init__(self, tmp_dir: Path) -> None:
        super().__init__(tmp_dir)
        self.socket_path = tmp_dir / "redis.sock"
        self.tls_port = 0
        self.ca_file = tmp_dir / "cert.pem"

    def start(self, timeout: float = 10.0) -> Self:
        executable = shutil.which("redis-server")
        assert executable is not None
        argv = redis_server_argv(executable, self.port, self.tmp_dir / "redis-data")
        argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        argv += ["--requirepass", PASSWORD, "--user", USER, "on", ">" + PASSWORD]
        argv += ["~*", "&*", "+@all"]
        if shutil.which("openssl"):
            key = self.tmp_dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
                + ["-keyout", str(key), "-out", str(self.ca_file), "-subj", "/CN=localhost"]
                + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                check=True,
                capture_output=True,
            )
            from tests.infra import free_port

            self.tls_port = free_port()
            argv += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.ca_file)]
            argv += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(self.ca_file)]
            argv += ["--tls-auth-clients", "no"]
        self._spawn(argv)
        wait_until(self.ping, timeout, message=f"redis on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as sock:
                sock.sendall(encode_command("AUTH", PASSWORD) + b"PING\r\n")
                return b"+PONG" in sock.recv(64)
        except OSError:
            return False

    def admin(self, db: int = 0) -> Any:
        return redis.Redis(
            host=LOCALHOST, port=self.port, password=PASSWORD, db=db, decode_responses=True
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredRedis]:
    with ConfiguredRedis(tmp_path_factory.mktemp("resp")).start() as running:
        yield running


# --- pure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/0", Endpoint(port=6380)),
        ("redis://h", Endpoint(host="h")),
        ("redis://:pw@h:1/2", Endpoint(host="h", port=1, password="pw", db=2)),
        (
            f"redis://{USER}:{QUOTED}@h/3",
            Endpoint(host="h", username=USER, password=PASSWORD, db=3),
        ),
        ("unix:///run/redis.sock?db=4", Endpoint(path="/run/redis.sock", db=4)),
        ("unix://:pw@/run/r.sock", Endpoint(path="/run/r.sock", password="pw")),
        ("rediss://h:7", Endpoint(host="h", port=7, tls=True)),
        (
            "rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem",
            Endpoint(host="h", tls=True, verify=False, ca_file="/ca.pem"),
        ),
        (
            "rediss://h?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
            Endpoint(host="h", tls=True, ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem"),
        ),
    ],
)
def test_endpoint_reads_the_whole_url(url: str, expected: Endpoint) -> None:
    assert Endpoint.from_url(url) == expected


def test_endpoint_refuses_other_schemes_and_hides_the_password() -> None:
    with pytest.raises(ValueError):
        Endpoint.from_url("http://h:6379")
    endpoint = Endpoint.from_url("redis://u:topsecret@h:1/2")
    assert "topsecret" not in repr(endpoint) and "topsecret" not in str(endpoint)


def test_endpoint_setup_commands_and_another_shard() -> None:
    assert Endpoint().setup() == []
    assert Endpoint(password="p").setup() == [("AUTH", "p")]
    assert Endpoint(username="u", password="p", db=5).setup() == [
        ("AUTH", "u", "p"),
        ("SELECT", "5"),
    ]
    shard = Endpoint(path="/s", tls=True, username="u", password="p").at("10.0.0.2", 7001)
    assert shard == Endpoint(host="10.0.0.2", port=7001, tls=True, username="u", password="p")


def test_encode_command_is_a_resp_array_of_bulk_strings() -> None:
    assert encode_command("SET", b"k\r\n", 12) == (
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n"
    )
    assert encode_command("é") == b"*1\r\n$2\r\n\xc3\xa9\r\n"


def test_reconnect_delay_grows_is_capped_and_jittered() -> None:
    delays = [[reconnect_delay(n) for _ in range(200)] for n in range(1, 12)]
    for n, samples in enumerate(delays, start=1):
        ceiling = min(2.0, 0.05 * 2 ** (n - 1))
        assert all(ceiling / 2 <= d <= ceiling for d in samples), n
    assert len(set(delays[3])) > 100  # jitter: not one fixed value
    assert max(delays[-1]) <= 2.0 and min(delays[-1]) >= 1.0


# --- against redis-server --------------------------------------------------------------------


async def _roundtrip(endpoint: Endpoint, server: ConfiguredRedis, db: int) -> None:
    key = unique_name("resp")
    conn = await connect(endpoint, RespConnection, scaled(5))
    try:
        assert await conn.request("SET", key, b"\x00binary\xff") == b"OK"
        assert await conn.request("GET", key) == b"\x00binary\xff"
    finally:
        conn.close()
    with server.admin(db) as admin, server.admin(0 if db else 9) as elsewhere:
        assert admin.exists(key) == 1  # written in the db the URL names, nowhere else
        assert elsewhere.exists(key) == 0


async def test_tcp_with_user_password_and_db(server: ConfiguredRedis) -> None:
    url = f"redis://{USER}:{QUOTED}@{LOCALHOST}:{server.port}/3"
    await _roundtrip(Endpoint.from_url(url), server, 3)


async def test_unix_socket_url_connects_to_the_socket(server: ConfiguredRedis) -> None:
    url = f"unix://:{QUOTED}@{server.socket_path}?db=2"
    endpoint = Endpoint.from_url(url)
    assert endpoint.path == str(server.socket_path)
    await _roundtrip(endpoint, server, 2)


async def test_tls_url(server: ConfiguredRedis) -> None:
    if not server.tls_port:
        pytest.skip("openssl is not installed")
    url = f"rediss://:{QUOTED}@{LOCALHOST}:{server.tls_port}/1?ssl_ca_certs={server.ca_file}"
    await _roundtrip(Endpoint.from_url(url), server, 1)
    # An unknown certificate authority is refused unless checks are turned off.
    with pytest.raises(OSError):
        await connect(
            Endpoint.from_url(f"rediss://:{QUOTED}@{LOCALHOST}:{server.tls_port}"),
            RespConnection,
            scaled(5),
        )
    loose = f"rediss://:{QUOTED}@{LOCALHOST}:{server.tls_port}/1?ssl_cert_reqs=none"
    await _roundtrip(Endpoint.from_url(loose), server, 1)


async def test_a_wrong_password_is_refused_and_the_connection_closed(
    server: ConfiguredRedis,
) -> None:
    with pytest.raises(RedisRefused, match="AUTH"):
        await connect(
            Endpoint(port=server.port, username=USER, password="wrong"), RespConnection, scaled(5)
        )
    conn = await connect(Endpoint(port=server.port), RespConnection, scaled(5))  # no AUTH
    try:
        with pytest.raises(RedisRefused, match="NOAUTH"):
            await conn.request("GET", "k")
    finally:
        conn.close()


async def test_writer_pipelines_replies_in_order_and_fails_them_when_lost(
    server: ConfiguredRedis,
) -> None:
    writer = RedisWriter(Endpoint(port=server.port, password=PASSWORD), scaled(5))
    got: list[Any] = []
    writer.send(encode_command("PING"), got.append)  # not connected yet: fails at once
    assert isinstance(got.pop(), ConnectionError)
    await writer.connect()
    key = unique_name("w")
    writer.send_many([(encode_command("INCR", key), got.append) for _ in range(50)])
    await await_until(lambda: len(got) == 50, 5, message="50 replies")
    assert got == list(range(1, 51))
    got.clear()
    with server.admin() as admin:
        name = f"writer-{key}"
        writer.send(encode_command("CLIENT", "SETNAME", name), got.append)
        await await_until(lambda: got == [b"OK"], 5, message="CLIENT SETNAME")
        writer.send(encode_command("BLPOP", unique_name("never"), 0), got.append)  # waits
        killed = next(c for c in admin.client_list() if c["name"] == name)
        admin.client_kill_filter(_id=killed["id"])
    await await_until(lambda: len(got) == 2, 5, message="the waiting command fails")
    assert isinstance(got[1], ConnectionError)
    states = [writer.connected]
    await writer.connect()  # and a new connection comes up
    states.append(writer.connected)
    assert states == [False, True]
    writer.close()


async def test_relay_subscribes_under_the_prefix_and_resubscribes_after_a_kill(
    server: ConfiguredRedis,
) -> None:
    keys = Keys(unique_name("pfx"))
    channel = keys.room("0123456789abcdef01234567").channel
    messages: list[tuple[str, bytes]] = []
    reconnects = asyncio.Event()

    async def on_reconnect(channels: set[str], suspect: set[str]) -> None:
        assert not suspect
        assert channels == {channel}
        reconnects.set()

    subscriptions = Subscriptions()
    relay = Relay(
        Endpoint(port=server.port, password=PASSWORD),
        hot_path(load_settings()),
        keys.relay_hello,
        subscriptions,
        lambda ch, data: messages.append((ch, data)),
        on_reconnect,
        scaled(5),
    )
    relay.start()
    try:
        await await_until(lambda: relay.healthy, 10, message="relay connected")
        with server.admin() as admin:
            assert keys.relay_hello in admin.pubsub_channels(keys.prefix + ":*")
            assert "coderoom:relay:hello" not in admin.pubsub_channels()
            subscriptions.subscribe(channel)
            await await_until(
                lambda: channel in admin.pubsub_channels(keys.prefix + ":*"), 5, message="sub"
            )
            admin.publish(channel, b"U\x00x")
            await await_until(lambda: messages == [(channel, b"U\x00x")], 5, message="message")
            admin.client_kill_filter(_type="pubsub")
            await asyncio.wait_for(reconnects.wait(), scaled(10))
            await await_until(lambda: relay.healthy, 10, message="relay back")
            admin.publish(channel, b"again")
            await await_until(lambda: len(messages) == 2, 5, message="after the reconnect")
    finally:
        await relay.stop()


async def test_gateway_relay_uses_the_configured_prefix(
    redis_server: RedisServer, redis_client: Any, redis_prefix: str
) -> None:
    """Two deployments sharing a Redis: the relay's private channel is built by
    shared.keys under REDIS_PREFIX, not hard-coded."""
    from services.gateway.app import Gateway

    settings = load_settings(
        redis_url=redis_server.url,
        redis_prefix=redis_prefix,
        token_secret="t" * 32,
        mongodb_url="mongodb://127.0.0.1:1/?directConnection=true",  # never contacted
    )
    gateway = Gateway(settings)
    gateway.relay.start()
    try:
        await await_until(lambda: gateway.relay.healthy, 10, message="relay connected")
        assert await redis_client.pubsub_channels(redis_prefix + ":*") == [
            f"{redis_prefix}:relay:hello"
        ]
    finally:
        await gateway.relay.stop()
        await gateway.redis.aclose()
        await gateway.mongo.close()
