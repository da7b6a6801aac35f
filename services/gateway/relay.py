"""Room fan-out between gateways over Redis pub/sub.

Guarantee: at most once, in order per room channel (Redis pub/sub). Durability comes
from the room log, not from here: the hub reads the log when it sees a sequence gap,
and ``on_reconnect`` is called after every reconnect of the pub/sub connection so the
hub can re-register its members and read what it missed. A gateway subscribes only to
the channels of rooms it serves.

The listener never dies silently: a lost connection is retried with backoff, and
``healthy`` is false (readiness fails) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]


class Relay:
    def __init__(
        self,
        redis: Redis,
        on_message: Handler,
        on_reconnect: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self._redis = redis
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._channels: set[str] = set()
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.healthy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is not None and self.healthy:
            await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None and self.healthy:
            try:
                await self._pubsub.unsubscribe(channel)
            except RedisError:
                pass  # the reconnect subscribes only to what is still wanted

    async def _run(self) -> None:
        delay = 0.05
        first = True
        while True:
            try:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                # A dummy channel so the connection is in subscribe mode from the start.
                await self._pubsub.subscribe("coderoom:relay:hello", *self._channels)
                self.healthy = True
                delay = 0.05
                if not first:
                    log.warning("pub/sub reconnected; resyncing %d rooms", len(self._channels))
                    self._resync = asyncio.create_task(self._on_reconnect())
                first = False
                await self._listen(self._pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.healthy:
                    log.error("pub/sub connection lost: %s", exc)
                self.healthy = False
                first = False
            if self._pubsub is not None:
                try:
                    await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _listen(self, pubsub: PubSub) -> None:
        on_message = self._on_message
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None or message["type"] != "message":
                continue
            channel = message["channel"]
            try:
                on_message(channel.decode(), message["data"])
            except Exception:
                log.exception("handling a message on %s failed", channel)
