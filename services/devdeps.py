"""The dependencies `coderoom run` starts when no URL names them (services/devrun.py):
the embedded MongoDB, one Redis (redis-server, else fakeredis) or, with
``--redis-cluster``, a local 3-primary/3-replica Redis Cluster (services/devcluster.py).
Each starter spawns its children through the supervisor, sets the URL settings in
``env`` and returns a line for the start banner."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from services import devcluster
from services.devproc import Child
from services.embedded import missing, redis_server_argv
from services.ports import free_port, port_free

PYTHON = [sys.executable, "-m", "services.cli"]


class StartupError(Exception):
    pass


class Supervisor(Protocol):
    async def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child: ...
    def watch(self, child: Child) -> None: ...
    async def until(
        self, what: str, child: Child | None, probe: Callable[[], Awaitable[bool]]
    ) -> None: ...


async def mongo_ok(url: str) -> bool:
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=500, connectTimeoutMS=500, timeoutMS=1000
    )
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        await client.close()
    return True


async def redis_ok(url: str) -> bool:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def start_mongo(sup: Supervisor, env: dict[str, str], port: int, data: Path) -> str:
    if "MONGODB_URL" in env:
        await sup.until("MongoDB", None, lambda: mongo_ok(env["MONGODB_URL"]))
        return f"MongoDB     {env['MONGODB_URL']}"
    if why := missing("mongoeco"):
        raise StartupError(f"{why}; or set MONGODB_URL")
    port = port if port_free(port) else free_port()
    argv = [*PYTHON, "mongo", "--data", str(data / "mongo"), "--port", str(port)]
    mongo = await sup.spawn("mongo", argv, env)
    sup.watch(mongo)
    env["MONGODB_URL"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    await sup.until("MongoDB", mongo, lambda: mongo_ok(env["MONGODB_URL"]))
    return f"MongoDB     {env['MONGODB_URL']} (embedded, data in {data / 'mongo'})"


async def start_redis(sup: Supervisor, env: dict[str, str], port: int, data: Path) -> str:
    if "REDIS_URL" in env:  # one server, or a seed node of a cluster: both answer PING
        await sup.until("Redis", None, lambda: redis_ok(env["REDIS_URL"]))
        return f"Redis       {env['REDIS_URL']}"
    port = port if port_free(port) else free_port()
    server = shutil.which("redis-server")
    if server:
        argv = redis_server_argv(server, port, data / "redis")
        kind = "redis-server"
    else:
        if why := missing("fakeredis"):
            raise StartupError(f"redis-server is not on PATH and {why}; or set REDIS_URL")
        argv = [*PYTHON, "redis", "--port", str(port)]
        kind = "fakeredis"
    redis = await sup.spawn("redis", argv, env)
    sup.watch(redis)
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    await sup.until("Redis", redis, lambda: redis_ok(env["REDIS_URL"]))
    return f"Redis       {env['REDIS_URL']} ({kind}, not persisted)"


async def start_redis_cluster(sup: Supervisor, env: dict[str, str], data: Path) -> str:
    """Six cluster nodes (``redis-1`` .. ``redis-6``), joined by ``redis-cli``. A node
    that dies does not stop the run: the cluster fails over (try ``kill -9`` on a
    primary)."""
    if "REDIS_URL" in env:
        raise StartupError("--redis-cluster starts its own cluster: unset REDIS_URL")
    if why := devcluster.tools_missing():
        raise StartupError(why)
    ports = devcluster.node_ports()
    nodes = [
        await sup.spawn(f"redis-{i}", devcluster.node_argv(p, data / "redis-cluster" / str(p)), env)
        for i, p in enumerate(ports, start=1)
    ]
    await sup.until("Redis nodes", None, lambda: _all_ok(ports))
    create = await sup.spawn("redis", devcluster.create_argv(ports), env)
    if await create.proc.wait() != 0:
        raise StartupError("redis-cli --cluster create failed (see its output above)")
    await sup.until("Redis Cluster", nodes[0], lambda: devcluster.cluster_ok(ports))
    env.update(devcluster.env(ports))
    primaries = ", ".join(str(p) for p in ports[:3])
    return f"Redis       Redis Cluster, primaries on {primaries} (+3 replicas), not persisted"


async def _all_ok(ports: list[int]) -> bool:
    for port in ports:
        if not await redis_ok(f"redis://127.0.0.1:{port}/0"):
            return False
    return True
