"""Fixtures for the hardening tests: one fleet per module, started with that module's limits.

A module sets ``FLEET_ENV`` (settings overrides) and ``FLEET_GATEWAYS`` (default 1) and
uses ``hfleet``; the fleet runs an api and gateways on the session's Redis and MongoDB.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.conftest import Blocks
from tests.infra import EmbeddedMongo, Fleet, RedisServer

# Small limits, so that every limit is reachable in a test within a second or two.
SMALL_LIMITS: dict[str, object] = {
    "MAX_FRAME_BYTES": 65536,
    "MAX_DOC_BYTES": 65536,
    "MAX_UPDATES_PER_SECOND": 20,
    "UPDATE_BURST": 40,
    "CLIENT_SEND_BUFFER_BYTES": 65536,
    "MAX_ROOM_MEMBERS": 5,
    "MAX_CONNECTIONS_PER_IP": 20,
    "ALLOWED_ORIGINS": "http://good.example",
    "MENTOR_GRACE_SECONDS": 1.5,
    "HEARTBEAT_INTERVAL_SECONDS": 0.5,
}


@pytest.fixture(scope="module")
def hfleet(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    mongo: EmbeddedMongo,
) -> Iterator[Fleet]:
    env = dict(getattr(request.module, "FLEET_ENV", SMALL_LIMITS))
    gateways = int(getattr(request.module, "FLEET_GATEWAYS", 1))
    fleet = Fleet(
        tmp_path_factory.mktemp("hardening"),
        gateways=gateways,
        redis=redis_server,
        mongo=mongo,
        env=env,
    )
    with fleet:
        yield fleet


@pytest.fixture(scope="module")
def hblocks(hfleet: Fleet) -> Blocks:
    return Blocks(hfleet)


@pytest.fixture(scope="module")
def hgw(hfleet: Fleet) -> list[str]:
    """Room-socket base URLs of the module's gateways."""
    return [g.ws_url + "/ws/rooms" for g in hfleet.gateways]
