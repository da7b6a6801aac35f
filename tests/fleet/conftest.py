"""Fixtures for multi-process room tests: a fleet of real gateways on a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def room_fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    """Two gateways + api on the shared Redis and MongoDB, with a short mentor grace."""
    fleet = Fleet(
        tmp_path_factory.mktemp("fleet"),
        gateways=2,
        redis=redis_server,
        mongo=mongo,
        env={
            "MENTOR_GRACE_SECONDS": GRACE,
            "HEARTBEAT_INTERVAL_SECONDS": 0.5,
            "KEEPALIVE_SECONDS": KEEPALIVE,
        },
    )
    with fleet:
        yield fleet


@pytest.fixture
def blocks(room_fleet: Fleet) -> Blocks:
    return Blocks(room_fleet)


@pytest.fixture
def gw(room_fleet: Fleet) -> list[str]:
    """Room-socket base URLs of the fleet's gateways."""
    return [g.ws_url + "/ws/rooms" for g in room_fleet.gateways]


def unique_client() -> str:
    return "c" + uuid.uuid4().hex[:10]


def own_fleet(tmp: Path, gateways: int = 2, **env: Any) -> Fleet:
    """A fleet with its own Redis and MongoDB (for tests that kill or restart them)."""
    settings = {"MENTOR_GRACE_SECONDS": GRACE, "HEARTBEAT_INTERVAL_SECONDS": 0.5}
    settings.update(env)
    return Fleet(tmp, gateways=gateways, env=settings)
