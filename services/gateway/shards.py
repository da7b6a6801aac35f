"""The hot-path writer per shard: one pipelined connection per primary (docs/cluster.md).

The outbox hands every command with a routing key (a key of the room it writes); the
router sends it on the connection of the primary that owns the key's slot, per the slot
map (``shared.redisconn``: ``CLUSTER SHARDS``, or every slot on the one server). Replies
come back to the caller's callback, except the cluster's redirections, handled here:

=================  =================================================================
``MOVED s h:p``    the slot has a new owner: resend there, refresh the map
``ASK s h:p``      the slot is being migrated: ``ASKING`` + the command at h:p, once
``TRYAGAIN``       a migrating slot's keys are split: resend after a jittered delay
``CLUSTERDOWN``    the callback gets a ConnectionError (the outbox keeps the batch and
                   reconnects with backoff, which reloads the map)
=================  =================================================================

A script that was redirected did not run, so resending is safe. A room has at most one
batch in flight (the outbox), so a resend cannot overtake the room's next batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from services.gateway.resp import Callback, Endpoint, encode_command
from services.gateway.writer import RedisWriter
from shared.redisconn import HotPath, Node, SlotMap

log = logging.getLogger(__name__)

# A command's retry budget: a MOVED or ASK costs REDIRECT_COST, a TRYAGAIN 1 (so at most
# 5 redirections in a row, or some 40 TRYAGAINs, about 4 s, while a slot's keys move).
BUDGET = 40
REDIRECT_COST = 8
_ASKING = encode_command("ASKING")


def _redirect(reply: Any) -> tuple[str, Node] | None:
    """``("MOVED"|"ASK", (host, port))`` for a redirection error, else None."""
    if not isinstance(reply, Exception) or isinstance(reply, ConnectionError):
        return None
    text = str(reply)
    kind, _, rest = text.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    address = rest.split(" ")[-1]
    host, _, port = address.rpartition(":")
    return kind, (host.strip("[]"), int(port))


class ShardRouter:
    """The outbox's connection(s): ``send``/``send_many`` route by key, never wait."""

    def __init__(self, endpoint: Endpoint, hot: HotPath, connect_timeout: float = 2.0) -> None:
        self._endpoint = endpoint
        self._hot = hot
        self.publish_command = hot.pubsub.publish
        self._timeout = connect_timeout
        self._map: SlotMap | None = None
        self._primaries: list[Node] = []  # the map's, computed once per map
        self._writers: dict[Node, RedisWriter] = {}
        self._stale = True  # the map must be reloaded before the next batch
        self._refreshing: asyncio.Task[None] | None = None
        self.redirects = 0  # MOVED/ASK/TRYAGAIN handled (tests and metrics read it)

    def known_nodes(self) -> list[Node]:
        return list(self._writers)

    def _writer(self, node: Node) -> RedisWriter:
        writer = self._writers.get(node)
        if writer is None:
            endpoint = self._endpoint if node is None else self._endpoint.at(*node)
            writer = self._writers[node] = RedisWriter(endpoint, self._timeout)
        return writer

    @property
    def connected(self) -> bool:
        return (
            not self._stale
            and self._map is not None
            and all(self._writer(n).connected for n in self._primaries)
        )

    async def connect(self) -> None:
        """Load the slot map and connect to every primary (raises OSError, TimeoutError,
        ConnectionError: the outbox retries with backoff)."""
        self._stale = True
        slot_map = await self._hot.load_map()
        await asyncio.gather(*(self._writer(n).connect() for n in slot_map.primaries))
        for node in [n for n in self._writers if n not in slot_map.primaries]:
            self._writers.pop(node).close()
        self._map, self._primaries = slot_map, slot_map.primaries
        self._stale = False

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            slot_map = await self._hot.load_map()
            self._map, self._primaries = slot_map, slot_map.primaries
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.warning("redis cluster map refresh failed: %s", exc)
            self._stale = True  # the outbox's reconnect loop tries again

    def _node(self, key: str) -> Node:
        assert self._map is not None
        return self._map.owner_of(key)

    def send(self, key: str, command: bytes, callback: Callback) -> None:
        """Write an encoded command now; ``callback`` gets its reply or an exception."""
        self.send_many([(key, command, callback)])

    def send_many(self, commands: list[tuple[str, bytes, Callback]]) -> None:
        """Several commands, one write per primary."""
        if self._map is None or self._stale:
            for _, _, callback in commands:
                callback(ConnectionError("redis not connected"))
            return
        by_node: dict[Node, list[tuple[bytes, Callback]]] = {}
        for key, command, callback in commands:
            try:
                node = self._node(key)
            except ConnectionError as exc:
                callback(exc)
                continue
            by_node.setdefault(node, []).append((command, self._guard(key, command, callback, 0)))
        for node, batch in by_node.items():
            writer = self._writer(node)
            if not writer.connected:
                self._stale = True  # reconnect (and reload the map) before the next batch
            writer.send_many(batch)

    def _guard(self, key: str, command: bytes, callback: Callback, hops: int) -> Callback:
        """The callback, after the cluster's redirections and outages are dealt with."""

        def reply(answer: Any) -> None:
            if isinstance(answer, Exception) and hops < BUDGET:
                redirect = _redirect(answer)
                if redirect is not None:
                    kind, node = redirect
                    self.redirects += 1
                    if kind == "MOVED":
                        self._refresh_soon()
                    asking = kind == "ASK"
                    self._resend(node, key, command, callback, hops + REDIRECT_COST, asking)
                    return
                text = str(answer)
                if text.startswith("TRYAGAIN"):
                    self.redirects += 1
                    delay = random.uniform(0.5, 1.0) * min(0.2, 0.01 * (hops + 1))
                    asyncio.get_running_loop().call_later(
                        delay, self._resend_by_map, key, command, callback, hops + 1
                    )
                    return
                if text.startswith(("CLUSTERDOWN", "MASTERDOWN", "LOADING", "READONLY")):
                    self._stale = True
                    callback(ConnectionError(f"redis cluster unavailable: {text}"))
                    return
            if isinstance(answer, ConnectionError):
                self._stale = True
            callback(answer)

        return reply

    def _resend_by_map(self, key: str, command: bytes, callback: Callback, hops: int) -> None:
        """TRYAGAIN: the same command to whoever the map says owns the key now."""
        if self._map is None or self._stale:
            callback(ConnectionError("redis not connected"))
            return
        try:
            node = self._node(key)
        except ConnectionError as exc:
            callback(exc)
            return
        self._resend(node, key, command, callback, hops)

    def _resend(
        self,
        node: Node,
        key: str,
        command: bytes,
        callback: Callback,
        hops: int,
        asking: bool = False,
    ) -> None:
        writer = self._writer(node)
        guarded = self._guard(key, command, callback, hops)
        if writer.connected:
            if asking:
                writer.send_many([(_ASKING, _ignore), (command, guarded)])
            else:
                writer.send(command, guarded)
            return

        async def connect_then_send() -> None:
            try:
                await writer.connect()
            except (OSError, TimeoutError, ConnectionError) as exc:
                self._stale = True
                callback(ConnectionError(f"redis node {node} unreachable: {exc}"))
                return
            self._resend(node, key, command, callback, hops, asking)

        asyncio.get_running_loop().create_task(connect_then_send())

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for writer in self._writers.values():
            writer.close()


def _ignore(_: Any) -> None:
    """The ``+OK`` of ASKING."""
