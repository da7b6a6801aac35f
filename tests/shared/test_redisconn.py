"""shared/redisconn.py and the cluster settings: pure parts (no server)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest
from pydantic import ValidationError

from shared.redisconn import (
    PLAIN,
    SHARDED,
    SlotMap,
    hot_path,
    node_host,
    node_port,
    parse_cluster_shards,
    seeds,
    sharded_script,
    url_at,
)
from shared.settings import load_settings
from tests.infra import child_env, scaled


def _lua_scripts() -> dict[str, str]:
    """Every Lua script the gateway registers: the module-level strings that call Redis."""
    import services.gateway

    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(services.gateway.__path__):
        module = importlib.import_module(f"services.gateway.{info.name}")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and "redis.call(" in value:
                found[f"{info.name}.{name}"] = value
    return found


ROOM_SCRIPTS = _lua_scripts()


def test_both_quotes_are_sharded() -> None:
    assert sharded_script("""redis.call("PUBLISH", KEYS[1], 'x')""") == (
        """redis.call("SPUBLISH", KEYS[1], 'x')"""
    )
    assert sharded_script("redis.call('PUBLISH' , k, v)") == "redis.call('SPUBLISH', k, v)"


def test_the_scripts_are_found() -> None:
    assert {"scripts.PUBLISH", "scripts.JOIN", "scripts.RESYNC"} <= set(ROOM_SCRIPTS)
    assert sum("PUBLISH" in text for text in ROOM_SCRIPTS.values()) >= 7  # chat, runs too


@pytest.mark.parametrize("name", sorted(ROOM_SCRIPTS))
def test_every_publish_of_every_script_becomes_sharded_on_a_cluster(name: str) -> None:
    text = ROOM_SCRIPTS[name]
    sharded = sharded_script(text)
    assert "PUBLISH" not in sharded.replace("SPUBLISH", ""), name
    assert sharded.count("SPUBLISH") == text.count("PUBLISH")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"redis_cluster_nodes": "a:1"}, "REDIS_CLUSTER_NODES is set but REDIS_CLUSTER is not"),
        ({"redis_cluster": True, "redis_url": "unix:///tmp/r.sock"}, "not unix://"),
        ({"redis_cluster": True, "redis_url": "redis://h:1/2"}, "only db 0"),
        ({"redis_cluster": True, "redis_cluster_nodes": "nohost"}, "is not host:port"),
        ({"redis_cluster": True, "redis_cluster_nodes": "h:99999"}, "is not host:port"),
    ],
)
def test_wrong_combinations_are_refused_naming_the_variable(
    env: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        load_settings(**env)


def test_seeds_keep_scheme_and_credentials() -> None:
    settings = load_settings(
        redis_url="rediss://user:pw@seed:6380/0?ssl_cert_reqs=none",
        redis_cluster=True,
        redis_cluster_nodes="b:7000, [::1]:7001",
    )
    assert seeds(settings) == [("seed", 6380), ("b", 7000), ("::1", 7001)]
    assert url_at(settings.redis_url, "b", 7000) == "rediss://user:pw@b:7000/0?ssl_cert_reqs=none"
    assert url_at(settings.redis_url, "::1", 1) == "rediss://user:pw@[::1]:1/0?ssl_cert_reqs=none"


async def test_one_server_is_one_shard_with_every_slot() -> None:
    hot = hot_path(load_settings())
    assert hot.pubsub == PLAIN
    slot_map = await hot.load_map()
    assert slot_map == SlotMap.single() and slot_map.uncovered == 0
    assert slot_map.owner_of("anything") is None  # the server REDIS_URL names
    assert hot_path(load_settings(redis_cluster=True)).pubsub == SHARDED


@pytest.mark.parametrize("service", ["gateway", "api"])
def test_a_service_with_a_wrong_combination_stops_at_start_naming_it(service: str) -> None:
    env = child_env({"REDIS_CLUSTER_NODES": "10.0.0.2:6379"})
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", service],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert done.returncode == 2
    assert "REDIS_CLUSTER_NODES is set but REDIS_CLUSTER is not true" in done.stderr + done.stdout


# CLUSTER SHARDS node entries as redis-server 7.0 sends them: a plain node; TLS only
# (--port 0 --tls-port, tls-cluster yes); both ports (tls-cluster yes).
PLAIN_NODE = {"id": "a", "port": 7000, "ip": "10.0.0.1", "role": "master"}
TLS_ONLY = {"id": "b", "tls-port": 7100, "ip": "10.0.0.2", "role": "master"}
BOTH = {"id": "c", "port": 7200, "tls-port": 7201, "ip": "10.0.0.3", "role": "master"}


@pytest.mark.parametrize(
    ("node", "tls", "port"),
    [
        (PLAIN_NODE, False, 7000),
        (PLAIN_NODE, True, 7000),  # a TLS client on a plain node: whatever it has
        (TLS_ONLY, True, 7100),
        (TLS_ONLY, False, 7100),
        (BOTH, True, 7201),  # a rediss:// client must not get the plaintext port
        (BOTH, False, 7200),
        ({"id": "d", "ip": "h"}, True, 0),  # no port at all (a node in handshake)
    ],
)
def test_a_node_port_is_the_tls_port_for_a_tls_client(
    node: dict[str, object], tls: bool, port: int
) -> None:
    assert node_port(node, tls) == port


def _resp2(fields: dict[str, object]) -> list[object]:
    """A map as RESP2 sends it: a flat list of names (bytes) and values."""
    return [x for k, v in fields.items() for x in (k.encode(), v)]


def _shard(slots: list[int], *nodes: dict[str, object]) -> list[object]:
    listed = [_resp2({**n, "health": b"online"}) for n in nodes]
    return _resp2({"slots": slots, "nodes": listed})


def test_cluster_shards_of_tls_nodes_map_slots_to_their_tls_ports() -> None:
    replica = {"id": "r", "port": 7300, "tls-port": 7301, "ip": "10.0.0.4", "role": "replica"}
    reply = [
        _shard([0, 5460], TLS_ONLY),
        _shard([5461, 10922, 10923, 16383], BOTH, replica),
    ]
    tls_map = parse_cluster_shards(reply, tls=True)
    assert tls_map.uncovered == 0
    assert tls_map.owner(0) == ("10.0.0.2", 7100)
    assert tls_map.owner(6000) == tls_map.owner(16383) == ("10.0.0.3", 7201)
    assert tls_map.primaries == [("10.0.0.2", 7100), ("10.0.0.3", 7201)]
    assert parse_cluster_shards(reply).owner(6000) == ("10.0.0.3", 7200)  # redis://


@pytest.mark.parametrize(
    ("node", "host"),
    [
        ({"ip": "10.0.0.1", "endpoint": "10.0.0.1"}, "10.0.0.1"),  # the default
        # cluster-preferred-endpoint-type hostname: the name a certificate carries
        ({"ip": "10.0.0.1", "endpoint": b"redis-1.example.net"}, "redis-1.example.net"),
        ({"ip": b"10.0.0.1", "endpoint": b"?"}, "10.0.0.1"),  # unknown-endpoint
        ({"ip": "10.0.0.1", "endpoint": ""}, "10.0.0.1"),
        ({"ip": "10.0.0.1"}, "10.0.0.1"),
    ],
)
def test_a_node_is_reached_at_its_preferred_endpoint(node: dict[str, object], host: str) -> None:
    assert node_host(node) == host
