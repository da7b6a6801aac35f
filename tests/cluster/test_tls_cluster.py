"""The fleet on a Redis Cluster that speaks only TLS, asks every client for a certificate
and for a password (issue #12, docs/cluster.md): 3 primaries + 3 replicas with ``--port 0
--tls-port P``, the cluster bus and replication in TLS, ``tls-auth-clients yes``,
``requirepass``; an api and two gateways given ``REDIS_URL=rediss://:PASSWORD@...
?ssl_ca_certs=CA&ssl_certfile=CERT&ssl_keyfile=KEY`` and ``REDIS_CLUSTER=true``. Rooms on
every shard converge across the gateways; and a client trusting the wrong CA, or without
a certificate, is told so at once, by every path, instead of hanging."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from redis.exceptions import RedisError

from services import devcluster
from services.gateway.resp import Endpoint
from shared.redisconn import ClusterUnavailable, hot_path, ping, redis_client
from shared.settings import load_settings
from tests.cluster.conftest import unready_services
from tests.fleet.classroom import Classroom
from tests.fleet.conftest import Blocks, assert_single_slot
from tests.infra import LOCALHOST, EmbeddedMongo, Fleet, scaled, wait_until
from tests.rediscluster import RedisClusterServers

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PASSWORD = "tls:s3cret@pw"  # needs escaping in a URL
ENV = {
    "MENTOR_GRACE_SECONDS": 5,
    "HEARTBEAT_INTERVAL_SECONDS": 0.5,
    "GATEWAY_DEAD_AFTER_SECONDS": 2,
    "REDIS_TIMEOUT_MS": 1000,
}


def test_a_tls_node_has_no_plaintext_port_and_tls_everywhere(tmp_path: Path) -> None:
    tls = devcluster.Tls(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    argv = devcluster.node_argv(30001, tmp_path / "n", 1000, "pw", tls)
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert options["--port"] == "0" and options["--tls-port"] == "30001"
    assert options["--tls-cluster"] == options["--tls-replication"] == "yes"
    assert options["--tls-ca-cert-file"] == str(tmp_path / "ca.pem")
    assert options["--tls-auth-clients"] == "no"
    assert options["--requirepass"] == options["--masterauth"] == "pw"
    create = devcluster.create_argv([30001, 30002], "pw", tls)
    assert create[1:4] == ["--tls", "--cacert", str(tmp_path / "ca.pem")]
    # Without TLS, nothing changes: the plaintext port, no TLS option.
    plain = devcluster.node_argv(30001, tmp_path / "n", 1000, "pw")
    assert plain[plain.index("--port") + 1] == "30001"
    assert not any(a.startswith("--tls") for a in plain + devcluster.create_argv([1], "pw"))
    assert devcluster.url([30001]) == "redis://127.0.0.1:30001/0"


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    started = time.monotonic()
    cluster = RedisClusterServers(
        tmp_path_factory.mktemp("tls-cluster"),
        node_timeout_ms=1000,
        password=PASSWORD,
        tls=True,
        client_certs=True,
    ).start()
    print(
        f"\nTLS (client certificates) + AUTH cluster (3 primaries, 3 replicas) up in "
        f"{time.monotonic() - started:.2f}s"
    )
    yield cluster
    cluster.stop()


def test_the_cluster_urls_carry_tls_and_the_password(tls_cluster: RedisClusterServers) -> None:
    assert tls_cluster.tls is not None
    env = tls_cluster.extra_env
    tls = tls_cluster.tls
    assert env["REDIS_URL"] == (
        f"rediss://:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_cluster.ports[0]}/0"
        f"?ssl_ca_certs={tls.ca_file}&ssl_certfile={tls.cert_file}&ssl_keyfile={tls.key_file}"
    )
    endpoint = Endpoint.from_url(env["REDIS_URL"]).at("127.0.0.1", tls_cluster.ports[3])
    assert endpoint.tls and endpoint.password == PASSWORD
    assert endpoint.ca_file == str(tls.ca_file)
    assert (endpoint.cert_file, endpoint.key_file) == (str(tls.cert_file), str(tls.key_file))
    with tls_cluster.node_client(tls_cluster.ports[0]) as node:
        assert node.config_get("tls-auth-clients") == {"tls-auth-clients": "yes"}


def no_plaintext(cluster: RedisClusterServers, port: int) -> None:
    """The node has no plaintext port, and a plaintext command on its port gets no reply."""
    with cluster.node_client(port) as node:
        assert node.config_get("port") == {"port": "0"}
        assert node.config_get("tls-port") == {"tls-port": str(port)}
        assert node.config_get("tls-cluster") == {"tls-cluster": "yes"}
    with socket.create_connection((LOCALHOST, port), timeout=scaled(2)) as plain:
        plain.sendall(b"*1\r\n$4\r\nPING\r\n")
        try:
            answer = plain.recv(64)
        except (TimeoutError, ConnectionError):
            answer = b""
        assert b"PONG" not in answer and b"NOAUTH" not in answer


async def test_a_fleet_on_a_tls_cluster_with_auth(
    tmp_path: Path, tls_cluster: RedisClusterServers, mongo: EmbeddedMongo
) -> None:
    cluster = tls_cluster
    with Fleet(tmp_path, gateways=2, redis=cluster, mongo=mongo, env=ENV) as fleet:  # type: ignore[arg-type]
        assert fleet.env["REDIS_URL"].startswith(f"rediss://:{quote(PASSWORD, safe='')}@")
        assert fleet.env["REDIS_CLUSTER"] == "true"
        assert fleet.api is not None
        for service in fleet.services:
            wait_until(lambda s=service: s.get("/readyz").status_code == 200, 15)  # type: ignore[misc]

        # Rooms until every primary owns at least one (and at least six rooms).
        keys, blocks, ids = fleet.keys, Blocks(fleet), list[str]()
        primaries = cluster.primaries()
        while len(ids) < 6 or {cluster.primary_of(keys.room(b).state) for b in ids} != set(
            primaries
        ):
            ids.append(blocks.new().id)
        urls = [g.ws_url + "/ws/rooms" for g in fleet.gateways]
        room = Classroom(urls, ids, students=2)  # mentor on one gateway, students on both
        await room.start()
        room.start_typing(interval=0.2)
        await asyncio.sleep(2.0)
        edits = await room.stop_typing()
        took = await room.wait_converged(15)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(room.presence_ok, 10, message="presence counts")
        )

        async with httpx.AsyncClient(timeout=scaled(5)) as http:
            lobby = (await http.get(fleet.api.url + "/api/rooms")).json()
        live = {r["blockId"]: r for r in lobby["rooms"] if r["blockId"] in set(ids)}
        assert set(live) == set(ids)
        assert all(r["mentor"] and r["students"] == 2 for r in live.values()), live

        # Every primary: TLS only, and both gateways' subscriber connections are on it
        # (each room's channel followed twice on its owner; no other port to be on).
        owners = {b: cluster.primary_of(keys.room(b).state) for b in ids}
        for port in primaries:
            no_plaintext(cluster, port)
            with cluster.node_client(port) as node:
                clients = node.client_list()
                assert all(c["laddr"] == f"127.0.0.1:{port}" for c in clients)
                assert sum(int(c["ssub"]) > 0 for c in clients) >= 2  # two gateways
                for b in (b for b, owner in owners.items() if owner == port):
                    channel = keys.room(b).channel
                    assert dict(node.pubsub_shardnumsub(channel))[channel] == 2
        for service in fleet.services:
            assert service.get("/readyz").status_code == 200
        print(
            f"\nTLS + AUTH cluster: {len(ids)} rooms over {len(primaries)} primaries "
            f"({sorted(list(owners.values()).count(p) for p in primaries)} each), "
            f"{len(room.clients)} clients on 2 gateways; {edits} edits, 0 lost, converged "
            f"{took:.2f}s after typing stopped"
        )
        await room.close()
        assert_single_slot(fleet)


async def test_a_wrong_ca_is_refused_at_once_and_said(
    tmp_path: Path, tls_cluster: RedisClusterServers, mongo: EmbeddedMongo
) -> None:
    """Certificate checks against a CA that did not sign the nodes' certificate: every
    path says "certificate verify failed" within the timeout, none hangs."""
    other = devcluster.make_cert(tmp_path / "other-ca")
    url = devcluster.url(tls_cluster.ports, PASSWORD, other)
    settings = load_settings(
        redis_url=url,
        redis_cluster=True,
        redis_cluster_nodes=",".join(f"127.0.0.1:{p}" for p in tls_cluster.ports[1:3]),
        redis_timeout_ms=1000,
    )
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="certificate verify failed") as caught:
        await asyncio.wait_for(hot_path(settings).load_map(), scaled(10))
    assert all(f"127.0.0.1:{p}" in str(caught.value) for p in tls_cluster.ports[:3])
    cold = redis_client(settings, socket_connect_timeout=1, socket_timeout=1)
    try:
        # A RedisError like one server's (callers answer 503 / retry), not redis-py's
        # RedisClusterException.
        with pytest.raises(ClusterUnavailable, match="certificate verify failed") as refused:
            await asyncio.wait_for(ping(cold), scaled(10))
        assert isinstance(refused.value, RedisError)
    finally:
        await cold.aclose()
    in_process = time.monotonic() - started

    env = {
        **ENV,
        **tls_cluster.extra_env,
        "REDIS_URL": url,
        "MONGODB_URL": mongo.url,
        "TOKEN_SECRET": "t" * 32,
    }
    with unready_services(env, tmp_path / "logs") as (gateway, api):
        lobby = api.get("/api/rooms", timeout=10)
        assert lobby.status_code == 503, lobby.text  # "Redis is unavailable", not a 500
        wait_until(lambda: "certificate verify failed" in gateway.log_text(), 10)
        text = gateway.log_text()
        assert "no redis cluster seed answered" in text  # the hot path, naming every seed
        assert "Traceback" not in text + api.log_text()  # said once, in one line
        print(
            f"\nwrong CA: refused by the slot-map loader and the cluster client in "
            f"{in_process:.2f}s; gateway and api not ready, the gateway's log says why"
        )


async def test_a_client_without_a_certificate_is_refused_at_once_and_said(
    tls_cluster: RedisClusterServers,
) -> None:
    """The right CA and password but no client certificate: the nodes end the handshake
    (``tls-auth-clients yes``); the slot-map loader and the cluster client both raise
    ClusterUnavailable (a RedisError: 503, retried) within the timeout, naming the seeds."""
    assert tls_cluster.tls is not None
    anonymous = dataclasses.replace(tls_cluster.tls, auth_clients=False)
    settings = load_settings(
        redis_url=devcluster.url(tls_cluster.ports, PASSWORD, anonymous),
        redis_cluster=True,
        redis_cluster_nodes=",".join(f"127.0.0.1:{p}" for p in tls_cluster.ports[1:3]),
        redis_timeout_ms=1000,
    )
    assert "ssl_certfile" not in settings.redis_url
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable) as caught:
        await asyncio.wait_for(hot_path(settings).load_map(), scaled(10))
    assert all(f"127.0.0.1:{p}" in str(caught.value) for p in tls_cluster.ports[:3])
    cold = redis_client(settings, socket_connect_timeout=1, socket_timeout=1)
    try:
        with pytest.raises(ClusterUnavailable) as refused:
            await asyncio.wait_for(ping(cold), scaled(10))
    finally:
        await cold.aclose()
    took = time.monotonic() - started
    print(f"\nno client certificate: refused in {took:.2f}s: {caught.value}; {refused.value}")
