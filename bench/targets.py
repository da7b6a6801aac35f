"""What the bench measures: coderoom's fleet and the reference peers, started fresh per run.

A target's `start()` returns a `Running` (URLs for the load generator, server PIDs,
auxiliary PIDs) and `stop()` stops its servers. Redis (one own instance on a free port,
shared by coderoom and the two-instance peers) is flushed before every run, as the
peers' bench.sh does; MongoDB (coderoom only) stays up for the whole bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.procs import Proc, Procs, http_get
from services.embedded import redis_server_argv
from services.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
PEER_NAMES = ("socketio", "hocuspocus", "ywebsocket")
# The load generator's client for y-websocket-protocol targets (coderoom, ywebsocket):
# "yws" (WebsocketProvider: applies every remote update) or "yws-raw" (never applies
# them; costs the load generator about what Socket.IO's clients cost).
YWS_ADAPTER = os.environ.get("YWS_ADAPTER", "yws")

# Regular rooms start from a tiny template; the join probe's block holds ~2 KB of code.
TEMPLATE = "def solve(xs):\n    return sorted(xs)\n"
SOLUTION = "# never produced by the load generator's edits\n"
_LINE = "    total = sum(x * x for x in values if x % 3 != 0)  # {n:04d}\n"
BIG_TEMPLATE = "def heavy(values):\n" + "".join(_LINE.format(n=i) for i in range(32))


@dataclass(frozen=True, slots=True)
class Running:
    urls: list[str]
    server_pids: list[int]
    aux_pids: list[int] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)


class RedisServer:
    """Our own redis-server (never the system one on 6379): no persistence."""

    def __init__(self, procs: Procs) -> None:
        self.port = free_port()
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = redis_server_argv(executable, self.port, procs.logs / "redis-data")
        self.proc: Proc = procs.start("redis", argv)
        self.proc.wait_port(self.port)
        self.client = redis.Redis(port=self.port, socket_timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        self.client.flushall()

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))


class RedisCluster:
    """A local Redis Cluster of 3 primaries, each with ``replicas`` replicas
    (``BENCH_CLUSTER_REPLICAS``, default 1; services/devcluster.py), for the
    ``coderoom-cluster`` target: the same gateways, pointed at the cluster."""

    def __init__(self, procs: Procs, replicas: int = 1) -> None:
        from services import devcluster

        self.replicas = replicas  # per primary; 0: three primaries alone, like the single Redis
        self.ports = devcluster.node_ports(3 * (1 + replicas))
        self.nodes: list[Proc] = []
        for port in self.ports:
            argv = devcluster.node_argv(port, procs.logs / f"redis-cluster-{port}")
            self.nodes.append(procs.start(f"redis-cluster-{port}", argv))
        for node, port in zip(self.nodes, self.ports, strict=True):
            node.wait_port(port)
        create = devcluster.create_argv(self.ports)
        create[create.index("--cluster-replicas") + 1] = str(replicas)
        subprocess.run(create, capture_output=True, check=True)
        devcluster.wait_ok(self.ports, timeout=30)
        self.env = devcluster.env(self.ports)
        self.clients = [redis.Redis(port=p, socket_timeout=10) for p in self.ports]

    @property
    def url(self) -> str:
        return self.env["REDIS_URL"]

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    def flush(self) -> None:
        for client in self.clients:  # replicas refuse writes: their primary flushes them
            with contextlib.suppress(redis.RedisError):
                client.flushall()


class Coderoom:
    """Embedded MongoDB + seeded blocks (started once) and 2 gateways (fresh per run)."""

    name = "coderoom"
    adapter = YWS_ADAPTER
    params = "role={role}"  # the yws adapter adds ?role=watcher for watchers

    def __init__(self, procs: Procs, redis_server: RedisServer, work: Path, gateways: int = 2):
        self.procs = procs
        self.redis = redis_server
        self.work = work
        self.count = gateways
        self.gateways: list[Proc] = []
        self.ports: list[int] = []
        self.mongo: Proc | None = None
        self.mongodb_url = ""
        self.rooms_file = work / "rooms.txt"
        self.join_file = work / "join-room.txt"
        self.src = ROOT
        self.commit = "working tree"
        self.cluster: RedisCluster | None = None  # set: the gateways use this cluster

    def cli(self, *args: str) -> list[str]:
        """argv of `coderoom ARGS` run from `self.src`, as the Python process itself."""
        return [sys.executable, "-c", "from services.cli import main; main()", *args]

    def snapshot(self, ref: str) -> None:
        """Run the gateways from `git archive REF` instead of the live working tree, so that
        edits made by others while the bench runs cannot change (or break) what is measured."""
        rev = subprocess.run(
            ["git", "rev-parse", "--short", ref],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dest = self.work / f"src-{rev}"
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", ref, "services", "shared"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        self.src, self.commit = dest, f"{rev} ({ref}, snapshot)"

    # --- once per bench ---------------------------------------------------------------
    def prepare(self, blocks: int, mongodb_url: str | None) -> None:
        if mongodb_url:
            self.mongodb_url = mongodb_url
        else:
            port = free_port()
            data = self.work / "mongo-data"
            data.mkdir(parents=True, exist_ok=True)
            self.mongo = self.procs.start(
                "mongo",
                self.cli("mongo", "--data", str(data), "--port", str(port)),
                cwd=self.src,
                env={"PYTHONPATH": str(self.src)},
            )
            self.mongo.wait_port(port, timeout=60)
            self.mongodb_url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        ids, join_id = asyncio.run(_seed_blocks(self.mongodb_url, blocks, self.work.name))
        self.rooms_file.write_text("\n".join(ids) + "\n")
        self.join_file.write_text(join_id + "\n")

    def env(self, port: int, index: int) -> dict[str, str]:
        return {
            **(self.cluster.env if self.cluster else {}),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "REDIS_URL": self.cluster.url if self.cluster else self.redis.url,
            "MONGODB_URL": self.mongodb_url,
            "TOKEN_SECRET": "bench-secret-not-for-production-0123456789",
            "MAX_CONNECTIONS_PER_IP": "0",
            "ALLOWED_ORIGINS": "*",
            "GATEWAY_ID": f"bench-gw{index}",
            "SHUTDOWN_DRAIN_SECONDS": "1",
            "PYTHONPATH": str(self.src),
        }

    # --- per run ----------------------------------------------------------------------
    def start(self, gateways: int | None = None) -> Running:
        self.stop()
        (self.cluster or self.redis).flush()
        self.ports = [free_port() for _ in range(gateways or self.count)]
        for i, port in enumerate(self.ports, start=1):
            proc = self.procs.start(
                f"gateway-{i}", self.cli("gateway"), cwd=self.src, env=self.env(port, i)
            )
            self.gateways.append(proc)
        for proc, port in zip(self.gateways, self.ports, strict=True):
            proc.wait_until(lambda p=port: _healthy(p), f"/healthz on {port}", timeout=60)
        return Running(
            urls=[f"ws://127.0.0.1:{p}/ws/rooms" for p in self.ports],
            server_pids=[g.pid for g in self.gateways],
            aux_pids=self.cluster.pids if self.cluster else [self.redis.proc.pid],
            metrics_urls=[f"http://127.0.0.1:{p}/metrics" for p in self.ports],
        )

    def stop(self) -> None:
        for proc in self.gateways:
            self.procs.stop(proc)
        self.gateways = []


class CoderoomCluster(Coderoom):
    """The same gateways and blocks as ``coderoom``, on a local 3+3 Redis Cluster."""

    name = "coderoom-cluster"

    def __init__(self, base: Coderoom, cluster: RedisCluster) -> None:
        super().__init__(base.procs, base.redis, base.work, base.count)
        self.mongo, self.mongodb_url = base.mongo, base.mongodb_url
        self.rooms_file, self.join_file = base.rooms_file, base.join_file
        self.src, self.commit = base.src, base.commit
        self.cluster = cluster
        self.cluster_ports = cluster.ports


def _healthy(port: int) -> bool:
    status, _ = http_get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    return status == 200


async def _seed_blocks(mongodb_url: str, n: int, tag: str) -> tuple[list[str], str]:
    """Insert `n` small blocks and one ~2 KB block straight into MongoDB; return their ids."""
    from shared.db import connect_mongo
    from shared.documents import CodeBlock
    from shared.settings import load_settings

    settings = load_settings(mongodb_url=mongodb_url, mongodb_timeout_ms=60000)
    client = await connect_mongo(settings)
    slug = "".join(c for c in tag.lower() if c.isalnum())[-20:] or "run"
    try:
        ids: list[str] = []
        for start in range(0, n, 100):  # small batches: the embedded server is slow on big ones
            docs = [
                CodeBlock(
                    title=f"bench room {i}",
                    slug=f"bench-{slug}-{i:05d}",
                    language="python",
                    template=TEMPLATE,
                    solution=SOLUTION,
                )
                for i in range(start, min(n, start + 100))
            ]
            result = await CodeBlock.insert_many(docs)
            ids += [str(i) for i in result.inserted_ids]
        big = CodeBlock(
            title="bench join probe (2 KB)",
            slug=f"bench-{slug}-join",
            language="python",
            template=BIG_TEMPLATE,
            solution=SOLUTION,
        )
        await big.insert()
        return ids, str(big.id)
    finally:
        await client.close()


class Peer:
    """A reference peer from the copied ../shared/peers, on free ports."""

    def __init__(self, name: str, procs: Procs, redis_server: RedisServer, peers: Path):
        self.name = name
        self.procs = procs
        self.redis = redis_server
        self.peers = peers
        self.running: list[Proc] = []
        self.adapter = {"socketio": "socketio", "hocuspocus": "hocuspocus"}.get(name, YWS_ADAPTER)
        self.params = ""

    def start(self) -> Running:
        self.stop()
        ports = [free_port()] if self.name == "ywebsocket" else [free_port(), free_port()]
        urls = []
        for i, port in enumerate(ports, start=1):
            if self.name == "socketio":
                env = {"PORT": str(port), "REDIS_URL": self.redis.url.removesuffix("/0")}
                argv, cwd, url = ["node", "server.js"], "socketio-seed", f"http://127.0.0.1:{port}"
            elif self.name == "hocuspocus":
                env = {
                    "PORT": str(port),
                    "REDIS_HOST": "127.0.0.1",
                    "REDIS_PORT": str(self.redis.port),
                }
                argv, cwd, url = ["node", "server.js"], "hocuspocus", f"ws://127.0.0.1:{port}"
            else:
                env = {"HOST": "127.0.0.1", "PORT": str(port)}
                argv = ["node", "node_modules/@y/websocket-server/src/server.js"]
                cwd, url = "ywebsocket", f"ws://127.0.0.1:{port}"
            proc = self.procs.start(f"{self.name}-{i}", argv, cwd=self.peers / cwd, env=env)
            self.running.append(proc)
            urls.append(url)
        if self.name != "ywebsocket":
            self.redis.flush()
        for proc, port in zip(self.running, ports, strict=True):
            proc.wait_port(port)
        aux = [self.redis.proc.pid] if self.name != "ywebsocket" else []
        return Running(urls=urls, server_pids=[p.pid for p in self.running], aux_pids=aux)

    def stop(self) -> None:
        for proc in self.running:
            self.procs.stop(proc)
        self.running = []


def install_peers(source: Path, dest: Path) -> Path:
    """Copy the read-only peers to `dest` and `npm ci` each package once."""
    if not (dest / "loadgen" / "run.js").exists():
        if not source.exists():
            raise SystemExit(f"peers not found at {source} (set PEERS_SRC)")
        shutil.copytree(source, dest, dirs_exist_ok=True)
        for path in [dest, *dest.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    for pkg in ("loadgen", "socketio-seed", "hocuspocus", "ywebsocket"):
        if not (dest / pkg / "node_modules").exists():
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=dest / pkg,
                check=True,
            )
    return dest
