"""The one place that knows whether Redis is one server or a cluster (docs/cluster.md).

``REDIS_URL`` names one node; ``REDIS_CLUSTER=true`` makes it a seed of a Redis Cluster
(or Valkey cluster), with more seeds in ``REDIS_CLUSTER_NODES``. Everything else gets
what it needs from here and never asks which mode runs:

- ``redis_client`` — redis-py's client for the cold paths (api, seed, housekeeping,
  joins, archive): ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``. Both speak
  the commands coderoom uses (single-slot commands, non-transactional pipelines of them,
  scripts), so callers type it as ``Redis``. On a cluster, scripts registered through it
  publish on the room's shard (``SPUBLISH``, see ``sharded_script``).
- ``HotPath`` — what the gateway's own RESP connections need: the slot map loader
  (``CLUSTER SHARDS`` from the seeds, or "every slot on the one server") and the names of
  the pub/sub commands (``PUBLISH``/``SUBSCRIBE`` or ``SPUBLISH``/``SSUBSCRIBE``).
"""

from __future__ import annotations

import asyncio
import bisect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.driver_info import DriverInfo
from redis.exceptions import RedisClusterException

from shared.settings import Settings

SLOTS = 16384
_PUBLISH_CALL = re.compile(r"redis\.call\((['\"])PUBLISH\1\s*,")
Node = tuple[str, int] | None  # a primary's address; None: the server REDIS_URL names


class ClusterUnavailable(redis.exceptions.ConnectionError, ConnectionError):
    """No seed answered ``CLUSTER SHARDS``, or the cluster does not cover every slot. A
    ``RedisError`` and an ``OSError``, as one unreachable server's error would be."""


def slot_of(key: str | bytes) -> int:
    """The cluster slot of a key or sharded channel (its hash tag's CRC16 mod 16384)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Which primary owns each slot: sorted, non-overlapping ranges (pure)."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    nodes: tuple[Node, ...]

    @classmethod
    def single(cls) -> SlotMap:
        return cls((0,), (SLOTS - 1,), (None,))

    @classmethod
    def from_ranges(cls, ranges: list[tuple[int, int, Node]]) -> SlotMap:
        ranges = sorted(ranges, key=lambda r: r[0])
        return cls(
            tuple(r[0] for r in ranges), tuple(r[1] for r in ranges), tuple(r[2] for r in ranges)
        )

    def owner(self, slot: int) -> Node:
        """The primary of a slot (raises ClusterUnavailable if no one owns it)."""
        i = bisect.bisect_right(self.starts, slot) - 1
        if i < 0 or slot > self.ends[i]:
            raise ClusterUnavailable(f"slot {slot} is not covered by the cluster")
        return self.nodes[i]

    def owner_of(self, key: str | bytes) -> Node:
        return self.owner(slot_of(key)) if len(self.nodes) > 1 else self.nodes[0]

    @property
    def primaries(self) -> list[Node]:
        return list(dict.fromkeys(self.nodes))

    @property
    def uncovered(self) -> int:
        """Slots no primary owns."""
        return SLOTS - sum(e - s + 1 for s, e in zip(self.starts, self.ends, strict=True))


def _pairs(raw: list[Any] | dict[Any, Any]) -> dict[str, Any]:
    """A RESP2 flat ``[name, value, ...]`` list, or redis-py's dict of it, with str names."""
    items = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return {as_text(k): v for k, v in items}


def as_text(value: Any) -> str:
    """A reply's bytes as text (a client with decode_responses gives str already)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def node_port(node: dict[str, Any], tls: bool) -> int:
    """A ``CLUSTER SHARDS`` node's port for a client with or without TLS (pure). A node
    lists ``port`` (plaintext) and, with ``tls-cluster yes``, ``tls-port``; a TLS-only
    node (``--port 0``) lists only ``tls-port``. A TLS client must use ``tls-port`` even
    when both are listed; failing that, whichever the node has."""
    first, second = ("tls-port", "port") if tls else ("port", "tls-port")
    return int(node.get(first) or node.get(second) or 0)


def node_host(node: dict[str, Any]) -> str:
    """A ``CLUSTER SHARDS`` node's address (pure): its preferred ``endpoint``, the one
    ``MOVED``/``ASK`` and ``CLUSTER SLOTS`` name (the IP, or with
    ``cluster-preferred-endpoint-type hostname`` the name a TLS certificate is more
    likely to carry); the ``ip`` when the endpoint is unknown (``?``) or empty."""
    endpoint = as_text(node.get("endpoint") or "")
    return endpoint if endpoint not in ("", "?") else as_text(node.get("ip") or "")


def parse_cluster_shards(reply: list[Any], tls: bool = False) -> SlotMap:
    """``CLUSTER SHARDS`` (RESP2) as a slot map of the healthy primaries, at the ports a
    client with (``tls``) or without TLS connects to (pure)."""
    ranges: list[tuple[int, int, Node]] = []
    for raw in reply:
        shard = _pairs(raw)
        nodes = [_pairs(n) for n in shard["nodes"]]
        primary = next(
            (
                n
                for n in nodes
                if as_text(n["role"]) in ("master", "primary") and as_text(n["health"]) == "online"
            ),
            None,
        )
        if primary is None:
            continue  # a shard without a live primary: its slots are not covered
        host = node_host(primary)
        port = node_port(primary, tls)
        slots = [int(s) for s in shard["slots"]]
        ranges.extend((slots[i], slots[i + 1], (host, port)) for i in range(0, len(slots), 2))
    return SlotMap.from_ranges(ranges)


def sharded_script(script: str) -> str:
    """A room script's text for a cluster: its channel messages go out with SPUBLISH, so
    they travel only through the room's shard (the channel is one of the script's KEYS
    and carries the room's hash tag, so it is in the script's slot)."""
    return _PUBLISH_CALL.sub(r"redis.call(\1SPUBLISH\1,", script)


class _ShardedCluster(RedisCluster):
    """redis-py's cluster client whose registered scripts publish sharded, and which
    fails like one server when it cannot reach the cluster."""

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        # redis-py raises RedisClusterException (not a RedisError) when no node answers
        # (a wrong CA, a wrong password, every seed down) or the slots are not covered;
        # callers handle an unreachable Redis as a RedisError (503, retry, readiness).
        try:
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        except RedisClusterException as exc:
            raise ClusterUnavailable(f"redis cluster unreachable: {exc}") from exc

    def register_script(self, script: str | bytes) -> AsyncScript:  # type: ignore[override]
        text = script.decode() if isinstance(script, bytes) else script
        return super().register_script(sharded_script(text))


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


def url_at(url: str, host: str, port: int) -> str:
    """The same URL (scheme, credentials, options) naming another node."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{where}" if userinfo else where))


def seeds(settings: Settings) -> list[tuple[str, int]]:
    """REDIS_URL's node and REDIS_CLUSTER_NODES, in that order."""
    options = urlsplit(settings.redis_url)
    first = (options.hostname or "127.0.0.1", options.port or 6379)
    more = [_host_port(n) for n in settings.redis_cluster_nodes]
    return list(dict.fromkeys([first, *more]))


def redis_client(settings: Settings, wait: float | None = None, **options: Any) -> Redis:
    """redis-py's client for the cold paths; ``options`` as ``Redis.from_url`` takes them.
    ``wait``: on one server, a blocking pool of ``max_connections`` where a burst waits
    this long for a connection (a cluster client keeps ``max_connections`` per node)."""
    # Without it redis-py reads its own version from the installed packages' metadata for
    # every new connection (about 1 ms each, in the event loop).
    options.setdefault("driver_info", DriverInfo(lib_version=redis.__version__))
    if not settings.redis_cluster:
        if wait is None:
            return Redis.from_url(settings.redis_url, **options)
        pool = BlockingConnectionPool.from_url(settings.redis_url, timeout=wait, **options)
        return Redis(connection_pool=pool)
    options.pop("health_check_interval", None)  # not a cluster client option
    extra = [ClusterNode(h, p) for h, p in seeds(settings)[1:]]
    client = _ShardedCluster.from_url(
        settings.redis_url,
        startup_nodes=extra or None,
        require_full_coverage=True,
        **options,
    )
    # RedisCluster answers every command coderoom sends the way Redis does.
    return cast(Redis, client)


async def ping(client: Redis) -> None:
    """Readiness: the server answers; on a cluster, it also covers every slot (raises)."""
    either: Any = client  # typed Redis (see redis_client); a RedisCluster on a cluster
    if not isinstance(either, RedisCluster):
        await client.ping()
        return
    info = await either.cluster_info()
    state = info.get("cluster_state") if isinstance(info, dict) else None
    if state not in ("ok", b"ok"):
        raise ClusterUnavailable(f"redis cluster state is {state!r}, not ok")


async def primary_run_ids(client: Redis) -> dict[str, str]:
    """``INFO server``'s ``run_id`` of every primary, by address (``host:port``, as
    ``key_owner`` names them; ``""`` for the one server): one command per primary, sent
    together. On a cluster a primary that does not answer has run id ``""`` (a shard
    down must not stop the caller's other work); on one server a failure raises."""
    either: Any = client
    if not isinstance(either, RedisCluster):
        return {"": str((await client.info("server")).get("run_id", ""))}
    nodes = either.get_primaries()
    infos = await asyncio.gather(
        *(either.info("server", target_nodes=n) for n in nodes), return_exceptions=True
    )
    return {
        n.name: "" if isinstance(i, BaseException) else str(i.get("run_id", ""))
        for n, i in zip(nodes, infos, strict=True)
    }


def key_owner(client: Redis) -> Callable[[str], str]:
    """The address of the primary owning a key's slot, from the client's slot cache (no
    I/O; ``""`` on one server, or for a slot no known primary covers)."""
    either: Any = client
    if not isinstance(either, RedisCluster):
        return lambda _key: ""

    def owner(key: str) -> str:
        node = either.get_node_from_key(key)
        return "" if node is None else str(node.name)

    return owner


# --- the gateway's hot path ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PubSubNames:
    """The pub/sub commands of the mode, and the kind of a message pushed to a subscriber."""

    publish: str
    subscribe: str
    unsubscribe: str
    message: bytes  # b"message" or b"smessage"
    unsubscribed: bytes  # the push telling a subscription ended (b"sunsubscribe")


PLAIN = PubSubNames("PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE", b"message", b"unsubscribe")
SHARDED = PubSubNames("SPUBLISH", "SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"sunsubscribe")


@dataclass(frozen=True, slots=True)
class HotPath:
    """What the gateway's writer and subscriber need: ``load_map()`` (raises
    ClusterUnavailable) and the pub/sub command names."""

    load_map: Callable[[], Awaitable[SlotMap]]
    pubsub: PubSubNames


async def _single_map() -> SlotMap:
    return SlotMap.single()


def hot_path(settings: Settings, known: Callable[[], list[Node]] | None = None) -> HotPath:
    """The slot map source and pub/sub names for this mode. ``known`` may list nodes
    learnt since start (tried after the configured seeds: a seed may be the dead one)."""
    if not settings.redis_cluster:
        return HotPath(_single_map, PLAIN)
    timeout = settings.redis_timeout_ms / 1000
    configured = seeds(settings)
    tls = urlsplit(settings.redis_url).scheme == "rediss"

    async def load() -> SlotMap:
        tried: list[str] = []
        candidates = list(configured)
        for node in known() if known else []:
            if node is not None and node not in candidates:
                candidates.append(node)
        for host, port in candidates:
            client = Redis.from_url(
                url_at(settings.redis_url, host, port),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            try:
                async with asyncio.timeout(timeout):
                    reply = await client.execute_command("CLUSTER SHARDS")  # type: ignore[no-untyped-call]
            except Exception as exc:  # noqa: BLE001 - each seed's failure is reported
                tried.append(f"{host}:{port} ({type(exc).__name__}: {exc})")
                continue
            finally:
                await client.aclose()
            slot_map = parse_cluster_shards(reply, tls)
            if slot_map.uncovered:
                raise ClusterUnavailable(
                    f"redis cluster at {host}:{port}: {slot_map.uncovered} of {SLOTS} "
                    "slots are not covered by a live primary"
                )
            return slot_map
        raise ClusterUnavailable(
            "no redis cluster seed answered CLUSTER SHARDS: " + "; ".join(tried)
        )

    return HotPath(load, SHARDED)
