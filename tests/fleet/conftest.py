"""Fixtures for multi-process room tests: a fleet of real gateways on a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.infra import EmbeddedMongo, Fleet, RedisServer

GRACE = 1.5
KEEPALIVE = 1.0


@dataclass(frozen=True)
class BlockInfo:
    id: str
    template: str
    solution: str


class Blocks:
    """Creates fresh code blocks through the api's admin route (one room per test)."""

    def __init__(self, fleet: Fleet) -> None:
        assert fleet.api is not None
        self.fleet = fleet
        self.api = fleet.api

    def new(self, **overrides: Any) -> BlockInfo:
        block = self.fleet.new_block(
            template=overrides.pop("template", "function add(a, b) {\n  // TODO\n}\n"),
            solution=overrides.pop("solution", "function add(a, b) {\n  return a + b;\n}\n"),
            **overrides,
        )
        return BlockInfo(block["id"], block["template"], block["solution"])

    def admin_get(self, path: str) -> httpx.Response:
        return self.api.get(path, headers={"Authorization": f"Bearer {Fleet.ADMIN_TOKEN}"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use ``engine`` (``room_fleet`` does) run once per Redis engine their
    module lists in ``ENGINES`` (default: a single Redis): the same tests, on a single
    ``redis-server`` and on a 3-primary Redis Cluster (docs/cluster.md)."""
    if "engine" in metafunc.fixturenames:
        engines = getattr(metafunc.module, "ENGINES", ("single",))
        metafunc.parametrize("engine", engines, indirect=True, scope="module")


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> str:
    """``single`` (one redis-server) or ``cluster`` (the session's Redis Cluster)."""
    return str(getattr(request, "param", "single"))


def engine_redis(request: pytest.FixtureRequest, engine: str) -> RedisServer:
    """The session's shared Redis for an engine (a cluster quacks like a RedisServer)."""
    name = "redis_cluster" if engine == "cluster" else "redis_server"
    return cast(RedisServer, request.getfixturevalue(name))


@pytest.fixture(scope="module")
def room_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    engine: str,
    mongo: EmbeddedMongo,
) -> Iterator[Fleet]:
    """Two gateways + api on the shared Redis (or cluster) and MongoDB, with a short
    mentor grace."""
    fleet = Fleet(
        tmp_path_factory.mktemp("fleet"),
        gateways=2,
        redis=engine_redis(request, engine),
        mongo=mongo,
        env={
            "MENTOR_GRACE_SECONDS": GRACE,
            "HEARTBEAT_INTERVAL_SECONDS": 0.5,
            "KEEPALIVE_SECONDS": KEEPALIVE,
        },
    )
    with fleet:
        yield fleet
        if engine == "cluster":
            assert_single_slot(fleet)


@pytest.fixture
def blocks(room_fleet: Fleet) -> Blocks:
    return Blocks(room_fleet)


@pytest.fixture
def gw(room_fleet: Fleet) -> list[str]:
    """Room-socket base URLs of the fleet's gateways."""
    return [g.ws_url + "/ws/rooms" for g in room_fleet.gateways]


CROSS_SLOT = ("CROSSSLOT", "same slot", "RedisClusterException", "MOVED", "ASK ")


def assert_single_slot(fleet: Fleet) -> None:
    """No service of a fleet on a cluster ever sent a cross-slot command, nor saw a
    redirection it did not follow (they would be logged as errors)."""
    for service in fleet.services:
        text = service.log_text()
        found = [word for word in CROSS_SLOT if word in text]
        assert not found, f"{service.name}: {found} in {service.log_path}"


def unique_client() -> str:
    return "c" + uuid.uuid4().hex[:10]


def own_fleet(tmp: Path, gateways: int = 2, **env: Any) -> Fleet:
    """A fleet with its own Redis and MongoDB (for tests that kill or restart them)."""
    return Fleet(tmp, gateways=gateways, env=fleet_env(env))


def fleet_env(env: dict[str, Any]) -> dict[str, Any]:
    """`own_fleet`'s settings: a short mentor grace and heartbeat, then ``env``."""
    return {"MENTOR_GRACE_SECONDS": GRACE, "HEARTBEAT_INTERVAL_SECONDS": 0.5, **env}
