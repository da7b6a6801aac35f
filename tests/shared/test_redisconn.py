"""shared/redisconn.py and the cluster settings: pure parts (no server)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest
from pydantic import ValidationError

from shared.redisconn import PLAIN, SHARDED, SlotMap, hot_path, seeds, sharded_script, url_at
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
