"""A throwaway local Redis Cluster: 3 primaries + 3 replicas of ``redis-server``.

What ``coderoom run --redis-cluster`` starts (and the tests' cluster fixture): six
``redis-server --cluster-enabled yes`` processes on free loopback ports, no persistence,
then ``redis-cli --cluster create ... --cluster-replicas 1`` joins them and spreads the
16384 slots over the three primaries. Pure argv builders plus a readiness check; the
callers spawn and supervise the processes.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from services.embedded import redis_server_argv
from services.ports import port_free

NODES = 6  # 3 primaries, each with one replica
NODE_TIMEOUT_MS = 2000  # how long a primary may be silent before its replica takes over


def tools_missing() -> str | None:
    """Why a local cluster cannot start here, or None."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (apt-get install redis-server redis-tools)"
    return None


BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def node_ports(count: int = NODES, first: int = 30000) -> list[int]:
    """``count`` ports that are free, and whose cluster bus ports are free too (the bus
    port must stay below 65536, so a kernel-picked ephemeral port will not do)."""
    ports: list[int] = []
    port = first
    while len(ports) < count:
        if port + BUS_OFFSET > 65535:
            raise OSError("no free ports for a local redis cluster")
        if port_free(port) and port_free(port + BUS_OFFSET):
            ports.append(port)
        port += 1
    return ports


def node_argv(
    port: int, data_dir: Path, node_timeout_ms: int = NODE_TIMEOUT_MS, password: str = ""
) -> list[str]:
    """One cluster node: a throwaway redis-server with cluster mode on (and AUTH, with
    ``password``: clients and the node's own replication use it)."""
    executable = shutil.which("redis-server") or "redis-server"
    data_dir.mkdir(parents=True, exist_ok=True)
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    return [
        *redis_server_argv(executable, port, data_dir),
        *auth,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(data_dir / "nodes.conf"),
        "--cluster-node-timeout",
        str(node_timeout_ms),
        # A replica may be promoted however stale it is (tests kill primaries at will).
        "--cluster-replica-validity-factor",
        "0",
    ]


def create_argv(ports: list[int], password: str = "") -> list[str]:
    """``redis-cli --cluster create``: the first half of ``ports`` become primaries."""
    auth = ["-a", password, "--no-auth-warning"] if password else []
    return [
        shutil.which("redis-cli") or "redis-cli",
        *auth,
        "--cluster",
        "create",
        *(f"127.0.0.1:{p}" for p in ports),
        "--cluster-replicas",
        "1",
        "--cluster-yes",
    ]


def url(ports: list[int]) -> str:
    return f"redis://127.0.0.1:{ports[0]}/0"


def env(ports: list[int]) -> dict[str, str]:
    """The settings that point a service at the cluster."""
    return {
        "REDIS_URL": url(ports),
        "REDIS_CLUSTER": "true",
        "REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in ports[1:]),
    }


async def cluster_ok(ports: list[int], password: str = "") -> bool:
    """True once every node says ``cluster_state:ok`` and sees all six nodes."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    for port in ports:
        client = Redis(
            host="127.0.0.1",
            port=port,
            password=password or None,
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        try:
            info = await client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()
        if isinstance(info, dict):  # redis-py parses the reply
            fields = {str(k): str(v) for k, v in info.items()}
        else:
            text = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(
            len(ports)
        ):
            return False
    return True


def wait_ok(ports: list[int], timeout: float, password: str = "") -> None:
    """Block until ``cluster_ok`` (raises TimeoutError)."""

    async def poll() -> None:
        async with asyncio.timeout(timeout):
            while not await cluster_ok(ports, password):  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.1)

    asyncio.run(poll())
