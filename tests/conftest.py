"""Fixtures shared by every test (see tests/infra.py for the processes behind them).

Session-scoped (one per xdist worker): ``redis_server`` (a real redis-server),
``mongo`` (embedded wire server, or ``$MONGODB_URL``).
Function-scoped: ``redis_prefix`` and ``mongo_db`` (unique names, so tests sharing the
servers never see each other's data), ``settings_factory(**overrides)``,
``api_client_factory(**overrides)`` / ``api_client`` (the api in-process, lifespan
run, httpx.AsyncClient), ``redis_client`` (redis.asyncio on the test's loop),
``service_factory(kind, **env)`` (api/gateway processes, stopped after the test),
``fleet_factory(gateways=2, **env)`` (a whole fleet on the shared servers).

Under CI (the env var ``CI`` set) a skip is a failure of the run unless its reason
starts with one of `ALLOWED_SKIPS` (README, "Tests"): a missing tool must not turn a
test green by vanishing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.settings import Settings, load_settings
from tests.infra import (
    EmbeddedMongo,
    Fleet,
    RedisServer,
    ServiceProcess,
    in_ci,
    kill_all,
    scaled,
    unique_name,
)
from tests.rediscluster import RedisClusterServers

ADMIN_TOKEN = "test-admin-token"
SettingsFactory = Callable[..., Settings]
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """pytest-timeout's per-test limit (pyproject) is a wall-clock limit like any other:
    scaled by CODEROOM_TIME_FACTOR, unless given on the command line or in the env."""
    if config.getoption("timeout", None) is None and not os.environ.get("PYTEST_TIMEOUT"):
        ini = config.getini("timeout")
        if ini:
            config.option.timeout = scaled(float(ini))


# The skips CI accepts, by the start of their reason; keep README's "Tests" in step.
ALLOWED_SKIPS = (
    # kubernetes-validate ships no schemas yet for the newest Kubernetes we target.
    "kubernetes-validate bundles no schemas for",
    # Only with MONGODB_URL set: these tests stop and restart the embedded server.
    "needs the embedded MongoDB",
)
_skipped: list[tuple[str, str]] = []  # (test id, reason)


def _note_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        _skipped.append((report.nodeid, reason))


pytest_runtest_logreport = _note_skip  # under xdist, the controller gets every report too
pytest_collectreport = _note_skip


def unexpected_skips() -> list[tuple[str, str]]:
    return [(test, why) for test, why in _skipped if not why.startswith(ALLOWED_SKIPS)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    kill_all()
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller decides
    if in_ci() and unexpected_skips() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    unexpected = unexpected_skips()
    if not in_ci() or not unexpected or hasattr(config, "workerinput"):
        return
    terminalreporter.section("skips not allowed under CI", sep="=", red=True, bold=True)
    for test, why in unexpected:
        terminalreporter.write_line(f"SKIPPED {test}: {why}")
    terminalreporter.write_line(
        f"{len(unexpected)} skip(s) not on ALLOWED_SKIPS (tests/conftest.py): the run fails"
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real 3-primary/3-replica Redis Cluster, started once per session (tests that kill
    or move its nodes start their own)."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    server = EmbeddedMongo(tmp_path_factory.mktemp("mongo")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix() -> str:
    return unique_name("t")


@pytest.fixture
def mongo_db(mongo: EmbeddedMongo) -> Iterator[str]:
    name = mongo.new_db_name()
    yield name
    mongo.drop_database(name)


@pytest.fixture
def settings_factory(
    redis_server: RedisServer, mongo: EmbeddedMongo, redis_prefix: str, mongo_db: str
) -> SettingsFactory:
    """Settings pointing at the shared servers with this test's prefix and database."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mongodb_url": mongo.url,
            "mongodb_db": mongo_db,
            "redis_url": redis_server.url,
            "redis_prefix": redis_prefix,
            "admin_token": ADMIN_TOKEN,
            "gateway_urls": (),
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def api_client_factory(
    settings_factory: SettingsFactory,
) -> AsyncIterator[ClientFactory]:
    """Build the api in-process (lifespan run) and return an httpx client for it."""
    from services.api.app import create_app

    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> httpx.AsyncClient:
            app = create_app(settings_factory(**overrides))
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            return await stack.enter_async_context(client)

        yield make


@pytest.fixture
async def api_client(api_client_factory: ClientFactory) -> httpx.AsyncClient:
    return await api_client_factory()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def service_factory(
    tmp_path: Path,
    redis_server: RedisServer,
    mongo: EmbeddedMongo,
    redis_prefix: str,
    mongo_db: str,
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start api/gateway processes on the shared servers; all stopped after the test.

    ``service_factory("api", ready="/readyz", MAX_BODY_BYTES=2048)``: keyword
    arguments in upper case are environment overrides.
    """
    started: list[ServiceProcess] = []

    def make(kind: str, ready: str | None = "/healthz", **env: Any) -> ServiceProcess:
        base: dict[str, Any] = {
            "MONGODB_URL": mongo.url,
            "MONGODB_DB": mongo_db,
            "REDIS_URL": redis_server.url,
            "REDIS_PREFIX": redis_prefix,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "TOKEN_SECRET": "test-token-secret",
            "ALLOWED_ORIGINS": "*",
        }
        base.update(env)
        service = ServiceProcess(kind, base, tmp_path / "logs")
        started.append(service)
        return service.start(ready=ready)

    yield make
    for service in reversed(started):
        service.stop()


@pytest.fixture
def fleet_factory(
    tmp_path: Path, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Callable[..., Fleet]]:
    """Start fleets (api + gateways) on the shared servers; stopped after the test."""
    fleets: list[Fleet] = []

    def make(gateways: int = 2, api: bool = True, **env: Any) -> Fleet:
        fleet = Fleet(
            tmp_path / f"fleet{len(fleets)}",
            gateways=gateways,
            api=api,
            env=env,
            redis=redis_server,
            mongo=mongo,
        )
        fleets.append(fleet)
        return fleet.start()

    yield make
    for fleet in reversed(fleets):
        fleet.stop()
