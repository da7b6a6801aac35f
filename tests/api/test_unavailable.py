"""MongoDB or Redis unreachable: the api starts, stays alive, answers 503 quickly.

These run the api as a process (as in production). Latencies are printed (-s), and
only checked against a generous bound: the point is "bounded", not "fast".
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.infra import EmbeddedMongo, ServiceProcess, free_port, scaled, wait_until

pytestmark = pytest.mark.slow
BOUND = 5.0  # seconds; MONGODB_TIMEOUT_MS is 2000 by default


def timed_get(service: ServiceProcess, path: str) -> tuple[int, float, dict[str, object]]:
    start = time.perf_counter()
    response = service.get(path, timeout=30)
    elapsed = time.perf_counter() - start
    return response.status_code, elapsed, response.json()


def report(what: str, elapsed: float) -> None:
    sys.stdout.write(f"\n{what}: {elapsed * 1000:.0f} ms\n")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def test_mongo_refusing_at_start(service_factory: Callable[..., ServiceProcess]) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    api = service_factory("api", MONGODB_URL=dead)  # waits for /healthz only
    assert api.get("/healthz").status_code == 200
    for path in ("/api/code-blocks", "/api/code-blocks/" + "a" * 24):
        status, elapsed, body = timed_get(api, path)
        report(f"mongo refusing, GET {path} -> {status}", elapsed)
        assert status == 503
        assert body == {
            "error": {"code": "unavailable", "message": "MongoDB is unavailable, try again later"}
        }
        assert elapsed < scaled(BOUND)
    status, elapsed, body = timed_get(api, "/readyz")
    report("mongo refusing, /readyz", elapsed)
    assert status == 503
    assert body["checks"]["mongodb"] != "ok"  # type: ignore[index]
    assert body["checks"]["redis"] == "ok"  # type: ignore[index]
    assert api.get("/api/config").status_code == 200
    assert api.alive


def test_mongo_silent(service_factory: Callable[..., ServiceProcess], silent_port: int) -> None:
    api = service_factory(
        "api", MONGODB_URL=f"mongodb://127.0.0.1:{silent_port}/?directConnection=true"
    )
    status, elapsed, _ = timed_get(api, "/api/code-blocks")
    report("mongo silent, GET /api/code-blocks", elapsed)
    assert status == 503
    assert elapsed < scaled(BOUND)
    status, elapsed, _ = timed_get(api, "/readyz")
    report("mongo silent, /readyz", elapsed)
    assert status == 503
    assert elapsed < scaled(BOUND)


def test_mongo_stopped_then_back(
    service_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    mongo = EmbeddedMongo(tmp_path / "own-mongo")
    if mongo.external:
        pytest.skip("needs the embedded MongoDB (MONGODB_URL points at a shared server)")
    mongo.start()
    try:
        # A copy is fresh for 1 s: while MongoDB is away the lobby list is then served
        # from the stale copy; what was never loaded answers 503.
        api = service_factory(
            "api", ready="/readyz", MONGODB_URL=mongo.url, BLOCK_LIST_FRESH_SECONDS=1
        )
        assert api.get("/api/code-blocks").status_code == 200
        mongo.stop()
        wait_until(
            lambda: api.get("/api/code-blocks").headers["X-Cache"] == "stale",
            10,
            message="the lobby list served stale",
        )
        assert api.get("/api/code-blocks").status_code == 200
        status, elapsed, _ = timed_get(api, "/api/code-blocks/" + "b" * 24)
        report("mongo stopped, GET /api/code-blocks/{never loaded}", elapsed)
        assert status == 503
        assert elapsed < scaled(BOUND)
        assert api.get("/healthz").status_code == 200
        mongo.restart()
        wait_until(
            lambda: api.get("/api/code-blocks/" + "b" * 24).status_code == 404,
            20,
            message="recovery",
        )
        # Stale-while-revalidate: the first request after the outage may still get the
        # stale copy while it starts the reload; the list is fresh again soon after.
        wait_until(
            lambda: api.get("/api/code-blocks").headers["X-Cache"] != "stale",
            10,
            message="the lobby list fresh again",
        )
    finally:
        mongo.stop()


def test_mongo_comes_up_after_the_api(
    service_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    mongo = EmbeddedMongo(tmp_path / "late-mongo")
    if mongo.external:
        pytest.skip("needs the embedded MongoDB")
    api = service_factory("api", MONGODB_URL=mongo.url)
    assert api.get("/api/code-blocks").status_code == 503
    mongo.start()
    try:
        wait_until(lambda: api.get("/readyz").status_code == 200, 20, message="ready")
        assert api.get("/api/code-blocks").json() == []
    finally:
        mongo.stop()


def test_redis_stopped_then_back(
    service_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    from tests.infra import RedisServer

    redis = RedisServer(tmp_path / "own-redis").start()
    try:
        api = service_factory("api", ready="/readyz", REDIS_URL=redis.url)
        assert api.get("/api/rooms").status_code == 200
        redis.stop()
        status, elapsed, body = timed_get(api, "/api/rooms")
        report("redis stopped, GET /api/rooms", elapsed)
        assert status == 503
        assert elapsed < scaled(BOUND)
        status, _, body = timed_get(api, "/readyz")
        assert status == 503
        assert body["checks"]["redis"] != "ok"  # type: ignore[index]
        redis.start()
        wait_until(lambda: api.get("/api/rooms").status_code == 200, 10, message="recovery")
    finally:
        redis.stop()
