"""Room fan-out between gateways over Redis pub/sub (sharded pub/sub on a cluster).

Guarantee: at most once, in order per room channel (Redis pub/sub). Durability comes
from the room log, not from here: a room reads its log when it sees a sequence gap,
and ``on_reconnect`` is called with the rooms whose subscription was interrupted (a
lost connection, a slot that moved, a primary that failed over) so the gateway can
re-register their members and read what they missed. A gateway subscribes only to the
channels of rooms it serves.

The subscriber keeps one connection per Redis primary (one in all on a single Redis) and
subscribes each channel on the primary that owns its slot (``SSUBSCRIBE`` on a cluster,
``SUBSCRIBE`` on one Redis: ``shared.redisconn.PubSubNames``). When the server ends a
sharded subscription on its own (the ``sunsubscribe`` push after a slot moved or a
failover) or a connection drops, the relay reloads the slot map, subscribes again where
the slot now lives and reports the rooms. Each connection is a small asyncio protocol
(``resp.py``) dispatching messages synchronously as hiredis parses them: every update of
every served room passes here, and redis-py's PubSub costs a coroutine round per message.

The listener never dies silently: failures are retried with jittered backoff, and
``healthy`` is false (readiness fails) until every channel is subscribed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from services.gateway.resp import Endpoint, RespConnection, connect, encode_command, reconnect_delay
from shared.redisconn import HotPath, Node, PubSubNames, SlotMap

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class _Subscriber(RespConnection):
    def __init__(
        self, names: PubSubNames, on_message: Handler, on_dropped: Callable[[str], None]
    ) -> None:
        super().__init__()
        self._message = names.message
        self._dropped = names.unsubscribed
        self._on_message = on_message
        self._on_dropped = on_dropped

    def reply_received(self, reply: Any) -> None:
        if isinstance(reply, list) and reply:
            kind = reply[0]
            if kind == self._message:
                try:
                    self._on_message(reply[1].decode(), reply[2])
                except Exception:
                    log.exception("handling a message on %s failed", reply[1])
                return
            if kind == self._dropped:  # ours (never awaited) or the server's own
                self._on_dropped(reply[1].decode())
                return
        super().reply_received(reply)  # a confirmation (or error) of a command


class Subscriptions:
    """The room channels this gateway wants. The rooms change it; the relay carries it
    out on its connections while it runs, and in full after every interruption."""

    def __init__(self) -> None:
        self.channels: set[str] = set()
        self.relay: Relay | None = None

    def subscribe(self, channel: str) -> None:
        self.channels.add(channel)
        if self.relay is not None:
            self.relay.want(channel)

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.relay is not None:
            self.relay.drop(channel)


class Relay:
    def __init__(
        self,
        endpoint: Endpoint,
        hot: HotPath,
        hello_channel: str,
        subscriptions: Subscriptions,
        on_message: Handler,
        on_reconnect: Callable[[set[str], set[str]], Coroutine[Any, Any, None]],
        connect_timeout: float = 2.0,
    ) -> None:
        self._endpoint = endpoint
        self._hot = hot
        self._names = hot.pubsub
        self._hello = hello_channel
        self._subs = subscriptions
        subscriptions.relay = self
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._connect_timeout = connect_timeout
        self._map: SlotMap | None = None
        self._conns: dict[Node, _Subscriber] = {}
        self._where: dict[str, Node] = {}  # channel -> node it is subscribed on
        self._lost: set[str] = set()  # channels whose subscription was interrupted
        self._dead: dict[str, Node] = {}  # ... by the loss of this node's connection
        self._suspect: set[str] = set()  # ... and now owned by another node (failover)
        self._wake = asyncio.Event()
        self._refresh = True
        self._task: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self.healthy = False
        self.resubscribed = 0  # channels subscribed again after an interruption

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()

    def known_nodes(self) -> list[Node]:
        return list(self._conns)

    # --- the rooms' wishes ---------------------------------------------------------------
    def want(self, channel: str) -> None:
        conn = self._live(channel)
        if conn is None:
            self._wake.set()  # the supervisor subscribes it once the node is reachable
            return
        node, sub = conn
        self._where[channel] = node
        sub.send(encode_command(self._names.subscribe, channel), self._confirmed(channel))

    def drop(self, channel: str) -> None:
        if channel not in self._where:
            self._lost.discard(channel)
            return
        node = self._where.pop(channel)
        self._lost.discard(channel)
        if (sub := self._conns.get(node)) is not None and sub.writable:
            sub.send(encode_command(self._names.unsubscribe, channel))  # push, never awaited

    def _live(self, channel: str) -> tuple[Node, _Subscriber] | None:
        if self._map is None or self._refresh:
            return None
        try:
            node = self._map.owner_of(channel)
        except ConnectionError:
            return None
        sub = self._conns.get(node)
        return None if sub is None or not sub.writable else (node, sub)

    def _confirmed(self, channel: str) -> Callable[[Any], None]:
        def reply(answer: Any) -> None:
            if isinstance(answer, Exception):  # MOVED (the map is stale), CLUSTERDOWN ...
                if channel in self._subs.channels or channel == self._hello:
                    log.warning("subscribing %s failed: %s", channel, answer)
                    self._interrupted(channel)

        return reply

    # --- interruptions -------------------------------------------------------------------
    def _interrupted(self, channel: str) -> None:
        self._where.pop(channel, None)
        self._lost.add(channel)
        self._refresh = True
        self.healthy = False
        self._wake.set()

    def _dropped(self, node: Node, channel: str) -> None:
        """A ``(s)unsubscribe`` push from ``node``: ours (the channel is no longer wanted
        there) or the server's (slot moved, failover) for a channel still wanted."""
        if channel in self._subs.channels or channel == self._hello:
            if channel in self._where and self._where[channel] == node:
                log.warning("redis ended the subscription of %s; subscribing again", channel)
                self._interrupted(channel)

    def _conn_lost(self, node: Node, conn: _Subscriber) -> None:
        if self._conns.get(node) is not conn:
            return  # closed by the relay itself
        del self._conns[node]
        log.error("pub/sub connection to %s lost", node or self._endpoint)
        for channel, where in list(self._where.items()):
            if where == node:
                self._interrupted(channel)
                self._dead[channel] = node
        self._refresh = True
        self.healthy = False
        self._wake.set()

    # --- the supervisor ------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            self._wake.clear()
            try:
                await self._reconcile()
            except (OSError, TimeoutError, ConnectionError) as exc:
                if first or self.healthy or failures == 0:
                    log.error("pub/sub connection failed: %s", exc)
                self.healthy = False
                self._refresh = True
                failures += 1
                await asyncio.sleep(reconnect_delay(failures))
                continue
            if failures:
                log.warning("pub/sub connected again")
            failures = 0
            first = False
            self.healthy = True
            lost, self._lost = self._lost - {self._hello}, set()
            suspect, self._suspect = self._suspect & lost, set()
            self._dead.clear()
            if lost:
                log.warning(
                    "pub/sub resubscribed; resyncing %d rooms (%d failed over)",
                    len(lost),
                    len(suspect),
                )
                self.resubscribed += len(lost)
                self._resync = asyncio.create_task(self._on_reconnect(lost, suspect))
            await self._wake.wait()

    async def _reconcile(self) -> None:
        """Load the map if needed, connect every primary, subscribe every wanted channel
        on its owner (raises on any failure: the caller backs off and tries again)."""
        if self._map is None or self._refresh:
            self._map = await self._hot.load_map()
            self._refresh = False
        slot_map = self._map
        for node in [n for n in self._conns if n not in slot_map.primaries]:
            self._conns.pop(node).close()
        await asyncio.gather(*(self._connect(n) for n in slot_map.primaries))
        wanted = {self._hello, *self._subs.channels}
        waits: list[tuple[str, asyncio.Future[Any]]] = []
        for channel in sorted(wanted):
            node = slot_map.owner_of(channel)
            if channel in self._where:
                old = self._where[channel]
                if old == node:
                    continue
                if (sub := self._conns.get(old)) is not None:
                    sub.send(encode_command(self._names.unsubscribe, channel))
                # The map moved it without telling us (no push, no lost connection yet):
                # it may have missed messages; a gone primary means a failover.
                self._lost.add(channel)
                if old not in slot_map.primaries:
                    self._dead[channel] = old
            if channel in self._dead and self._dead[channel] != node:
                self._suspect.add(channel)  # its primary died; a replica took over
            self._where[channel] = node
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._conns[node].send(encode_command(self._names.subscribe, channel), done.set_result)
            waits.append((channel, done))
        async with asyncio.timeout(self._connect_timeout):
            answers = await asyncio.gather(*(done for _, done in waits))
        failed = [
            (c, a) for (c, _), a in zip(waits, answers, strict=True) if isinstance(a, Exception)
        ]
        for channel, _ in failed:
            self._where.pop(channel, None)
        if failed:
            self._refresh = True
            raise ConnectionError(f"subscribing {failed[0][0]} failed: {failed[0][1]}")
        for channel in [c for c in self._where if c not in wanted]:
            del self._where[channel]

    async def _connect(self, node: Node) -> None:
        sub = self._conns.get(node)
        if sub is not None and sub.writable:
            return
        endpoint = self._endpoint if node is None else self._endpoint.at(*node)
        conn = await connect(
            endpoint,
            lambda: _Subscriber(self._names, self._on_message, lambda c: self._dropped(node, c)),
            self._connect_timeout,
        )
        self._conns[node] = conn
        conn.closed.add_done_callback(lambda _: self._conn_lost(node, conn))
