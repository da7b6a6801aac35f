"""Fixtures for the Redis Cluster tests: a cluster of their own (they move slots and kill
primaries, which the session's shared cluster must not see)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.infra import ServiceProcess, scaled
from tests.rediscluster import RedisClusterServers


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("own-cluster")).start()
    yield cluster
    cluster.stop()


@contextmanager
def unready_services(env: Mapping[str, object], logs: Path) -> Iterator[tuple[ServiceProcess, ...]]:
    """A gateway and an api on a Redis they cannot use: both start, and both answer
    ``/readyz`` with 503 at once (not ready and saying so, never a hang); stopped after."""
    gateway = ServiceProcess("gateway", env, logs).start("/healthz")
    api = ServiceProcess("api", env, logs).start("/healthz")
    try:
        for service in (gateway, api):
            asked = time.monotonic()
            response = service.get("/readyz", timeout=10)
            assert response.status_code == 503, response.text
            assert time.monotonic() - asked < scaled(6)  # an answer, not a hang
        yield gateway, api
    finally:
        gateway.stop()
        api.stop()
