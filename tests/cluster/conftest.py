"""Fixtures for the Redis Cluster tests: a cluster of their own (they move slots and kill
primaries, which the session's shared cluster must not see)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.rediscluster import RedisClusterServers


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("own-cluster")).start()
    yield cluster
    cluster.stop()
