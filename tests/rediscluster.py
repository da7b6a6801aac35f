"""A real Redis Cluster for tests: 3 primaries + 3 replicas of ``redis-server``.

`RedisClusterServers(tmp_dir)` starts six cluster-enabled nodes on free ports (argv from
``services.devcluster``, as ``coderoom run --redis-cluster`` uses), joins them with
``redis-cli --cluster create`` and waits for ``cluster_state:ok``. It quacks like
`RedisServer` where a `Fleet` needs it: ``.url``, ``.start()``, ``.stop()``, and
``.extra_env`` (REDIS_CLUSTER, REDIS_CLUSTER_NODES) which `Fleet` adds to its services'
environment. ``.nodes`` are the processes (`ManagedProcess`), ``.client()`` a sync
``redis.RedisCluster``, ``.node_client(port)`` one node's plain client,
``.primary_of(key)`` the port of the primary owning a key's slot.

``password=`` turns AUTH on; ``tls=True`` makes every node TLS only (``--port 0``, the
cluster bus and replication in TLS, one self-signed certificate: ``.tls.ca_file``) and
``.url`` a ``rediss://`` URL trusting it; ``client_certs=True`` also makes the nodes ask
every client for a certificate (``tls-auth-clients yes``), and ``.url`` present one.
"""

from __future__ import annotations

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from services import devcluster
from shared.redisconn import node_port
from tests.infra import LOCALHOST, ManagedProcess, scaled, tool_missing, wait_until


class ClusterNode(ManagedProcess):
    name = "redis-node"

    def __init__(
        self,
        tmp_dir: Path,
        port: int,
        node_timeout_ms: int,
        password: str,
        tls: devcluster.Tls | None = None,
    ) -> None:
        super().__init__(tmp_dir / f"node-{port}.log")
        self.tmp_dir = tmp_dir
        self.port = port
        self.node_timeout_ms = node_timeout_ms
        self.password = password
        self.tls = tls

    def start(self) -> Self:
        self._spawn(
            devcluster.node_argv(
                self.port,
                self.tmp_dir / str(self.port),
                self.node_timeout_ms,
                self.password,
                self.tls,
            )
        )
        return self


class RedisClusterServers:
    def __init__(
        self,
        tmp_dir: Path,
        node_timeout_ms: int = 1000,
        password: str = "",
        tls: bool = False,
        client_certs: bool = False,
    ) -> None:
        if why := devcluster.tools_missing(tls):
            tool_missing(why)
        self.tmp_dir = tmp_dir
        # Spread start points: parallel sessions (xdist workers) rarely collide.
        self.ports = devcluster.node_ports(first=random.randrange(20000, 45000))
        self.password = password
        self.tls = devcluster.make_cert(tmp_dir / "tls", client_certs) if tls else None
        self.nodes = [
            ClusterNode(tmp_dir, p, node_timeout_ms, password, self.tls) for p in self.ports
        ]

    @property
    def url(self) -> str:
        return devcluster.url(self.ports, self.password, self.tls)

    @property
    def extra_env(self) -> dict[str, str]:
        # REDIS_URL with the password (a Fleet takes REDIS_URL from here, after .url).
        return devcluster.env(self.ports, self.password, self.tls)

    @property
    def tls_options(self) -> dict[str, Any]:
        """redis-py's options for a TLS node (none without TLS)."""
        if self.tls is None:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.tls.ca_file),
            **devcluster.client_cert_options(self.tls),
        }

    def start(self, timeout: float = 30.0) -> Self:
        try:
            for node in self.nodes:
                node.start()
            wait_until(lambda: all(self._pings(p) for p in self.ports), 10, message="nodes up")
            subprocess.run(
                devcluster.create_argv(self.ports, self.password, self.tls),
                check=True,
                capture_output=True,
                timeout=scaled(timeout),
            )
            # In a thread: it runs its own event loop, and the caller may be in one.
            with ThreadPoolExecutor(1) as pool:
                wait = pool.submit(
                    devcluster.wait_ok, self.ports, scaled(timeout), self.password, self.tls
                )
                wait.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pings(self, port: int) -> bool:
        import redis

        password = self.password or None
        try:
            with redis.Redis(
                host=LOCALHOST,
                port=port,
                password=password,
                socket_timeout=0.5,
                **self.tls_options,
            ) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def node_client(self, port: int) -> Any:
        import redis

        return redis.Redis(
            host=LOCALHOST,
            port=port,
            password=self.password or None,
            decode_responses=True,
            socket_timeout=5,
            **self.tls_options,
        )

    def client(self) -> Any:
        import redis

        return redis.RedisCluster(
            host=LOCALHOST,
            port=self.ports[0],
            password=self.password or None,
            decode_responses=True,
            **self.tls_options,
        )

    def primaries(self) -> list[int]:
        """Ports of the current primaries (asked of any live node)."""
        for port in self.ports:
            try:
                with self.node_client(port) as client:
                    shards = client.execute_command("CLUSTER SHARDS")
            except Exception:  # noqa: BLE001 - a dead node: ask the next
                continue
            out = []
            for shard in shards:
                for node in shard["nodes"]:
                    if node["role"] == "master" and node["health"] == "online":
                        out.append(node_port(node, self.tls is not None))
            return sorted(out)
        raise RuntimeError("no cluster node answers")

    def replicas_of(self, primary: int) -> list[int]:
        """Ports of a primary's replicas."""
        with self.node_client(primary) as client:
            for shard in client.execute_command("CLUSTER SHARDS"):
                ports = {node_port(n, self.tls is not None): n["role"] for n in shard["nodes"]}
                if ports.get(primary) == "master":
                    return [p for p, role in ports.items() if role != "master"]
        return []

    def primary_of(self, key: str) -> int:
        from shared.redisconn import slot_of

        slot = slot_of(key)
        for port in self.ports:
            try:
                with self.node_client(port) as client:
                    for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                        if start <= slot <= end:
                            return int(primary[1])
            except Exception:  # noqa: BLE001
                continue
        raise RuntimeError(f"nobody owns slot {slot}")

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def start_without_replicas(self, timeout: float = 30.0) -> Self:
        """Instead of ``start``: 3 primaries and no replica, so a primary that dies stays
        its shard's only node (``restart`` brings it back empty, owning its slots)."""
        self.ports, self.nodes = self.ports[:3], self.nodes[:3]
        argv = devcluster.create_argv(self.ports, self.password)
        argv[argv.index("--cluster-replicas") + 1] = "0"
        try:
            for node in self.nodes:
                node.start()
            wait_until(lambda: all(self._pings(p) for p in self.ports), 10, message="nodes up")
            subprocess.run(argv, check=True, capture_output=True, timeout=scaled(timeout))
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Block until every node says ``cluster_state:ok`` and knows every node."""
        with ThreadPoolExecutor(1) as pool:
            pool.submit(devcluster.wait_ok, self.ports, scaled(timeout), self.password).result()

    def restart(self, port: int) -> None:
        """SIGKILL a node and start it again on the same port with the same nodes.conf:
        it rejoins with its role and slots, and (no persistence) without its data."""
        node = self.node(port)
        node.kill()
        node.start()
        wait_until(lambda: self._pings(port), 10, message=f"node {port} up again")


def node_id(client: Any) -> str:
    return str(client.execute_command("CLUSTER MYID"))


def move_slot(cluster: RedisClusterServers, slot: int, target: int, between: Any = None) -> int:
    """Migrate ``slot`` to the primary on port ``target`` the way ``redis-cli --cluster
    reshard`` does (SETSLOT IMPORTING/MIGRATING, MIGRATE the keys, SETSLOT NODE
    everywhere); ``between()`` runs while the slot is half-migrated. The source port."""
    from shared.redisconn import slot_of  # noqa: F401 - callers compute slots with it

    source = None
    for port in cluster.primaries():
        with cluster.node_client(port) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    source = int(primary[1])
        break
    assert source is not None and source != target, (source, target)
    with cluster.node_client(source) as src, cluster.node_client(target) as dst:
        src_id, dst_id = node_id(src), node_id(dst)
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        if between is not None:
            between()
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            auth = ["AUTH", cluster.password] if cluster.password else []
            src.execute_command("MIGRATE", LOCALHOST, target, "", 0, 5000, *auth, "KEYS", *keys)
        for port in cluster.primaries():
            with cluster.node_client(port) as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    return source
