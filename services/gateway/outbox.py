"""Everything a gateway writes to Redis on the hot path, coalesced per tick.

Students' updates are queued per room, awareness per channel. Once per event-loop tick
everything queued is written to the shard router (``shards.ShardRouter``: one pipelined
connection per Redis primary, one in all on a single Redis): one
EVALSHA per room with the room's updates merged (at most ``MAX_BATCH`` per log entry:
pycrdt's memory to apply an update grows with the square of its consecutive items, and
``merge_updates`` does not squash keystrokes), one PUBLISH (SPUBLISH on a cluster) per
awareness message. A room
has at most one batch in flight; what arrives meanwhile forms the next, larger batch, so
a slow Redis gets fewer, bigger writes instead of a queue of small ones.

When Redis refuses a room's batch because it lost the room (restart), the batch is kept
and the room is *held* until it has been resynced (``release``). When the connection
is down, batches wait and the outbox reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycrdt import merge_updates

from services.gateway.resp import encode_command, reconnect_delay
from services.gateway.shards import ShardRouter
from services.gateway.store import RoomStore

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_COMMANDS = 20_000  # encoded EVALSHA prefixes kept (rooms x sessions), then forgotten

Published = Callable[[str, str, int, int, int], None]  # block, session, seq, bytes, since
# block, session, closed (else: Redis lost the room); returns whether to hold the batch
# until ``release`` (the room is served here and will be resynced) or drop it.
Lost = Callable[[str, str, bool], bool]


_EMPTY_BULK = b"$0\r\n\r\n"


@dataclass(slots=True)
class _Queue:
    session: str
    updates: list[bytes] = field(default_factory=list)
    authors: list[bytes] = field(default_factory=list)  # parallel to updates (history tags)
    held: bool = False
    in_flight: bool = False


class Outbox:
    def __init__(
        self,
        writer: ShardRouter,
        store: RoomStore,
        gateway_id: str,
        on_published: Published,
        on_lost: Lost,
        history_max_bytes: int = 1 << 22,
    ) -> None:
        self._pipe = writer
        self._history_max = history_max_bytes
        self._store = store
        self._gateway = gateway_id.encode()
        self._on_published = on_published
        self._on_lost = on_lost
        self._rooms: dict[str, _Queue] = {}
        self._commands: dict[tuple[str, str], bytes] = {}
        self._awareness: list[tuple[str, bytes]] = []
        self._scheduled = False
        self._in_flight = 0
        self._loading_script = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._draining = False  # only then is "idle" worth computing
        self._idle = asyncio.Event()

    # --- producers (synchronous, called from the hot path) -------------------------------
    def update(self, block_id: str, session: str, update: bytes, author: bytes = b"") -> None:
        queue = self._rooms.get(block_id)
        if queue is None or queue.session != session:
            queue = self._rooms[block_id] = _Queue(session)
        queue.updates.append(update)
        queue.authors.append(author)
        self._schedule()

    def _command(self, block_id: str, session: str) -> bytes:
        """The room's EVALSHA without its last two arguments (the batch's author tags and
        update), encoded once per room session
        (a queue lives only while it has updates: in a room typing a keystroke now and
        then, that is every keystroke)."""
        key = (block_id, session)
        command = self._commands.get(key)
        if command is None:
            if len(self._commands) >= MAX_COMMANDS:
                self._commands.clear()
            keys = self._store.room_keys(block_id).as_list()
            full = encode_command(
                "EVALSHA",
                self._store.publish_sha,
                len(keys),
                *keys,
                session,
                self._gateway,
                self._history_max,
                b"",
                b"",
            )
            command = self._commands[key] = full[: -2 * len(_EMPTY_BULK)]
        return command

    def awareness(self, channel: str, data: bytes) -> None:
        self._awareness.append((channel, data))
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # --- room control --------------------------------------------------------------------
    def release(self, block_id: str) -> None:
        """The room was resynced: send what was held."""
        queue = self._rooms.get(block_id)
        if queue is not None and queue.held:
            queue.held = False
            self._schedule()

    async def drained(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds until nothing sendable is queued or in flight."""
        self._draining = True
        self._check_idle()
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        self._pipe.close()

    # --- the writer -------------------------------------------------------------------------
    def _flush(self) -> None:
        self._scheduled = False
        if not self._pipe.connected:
            if self._reconnecting is None or self._reconnecting.done():
                self._reconnecting = asyncio.create_task(self._reconnect())
            return
        out: list[tuple[str, bytes, Callable[[Any], None]]] = []
        for block_id, queue in list(self._rooms.items()):
            if queue.held or queue.in_flight or not queue.updates:
                continue
            batch = queue.updates[:MAX_BATCH]
            del queue.updates[:MAX_BATCH]
            authors = queue.authors[:MAX_BATCH]
            del queue.authors[:MAX_BATCH]
            merged = batch[0] if len(batch) == 1 else merge_updates(*batch)
            tags = authors[0] if len(authors) == 1 else b"\n".join(dict.fromkeys(authors))
            prefix = self._command(block_id, queue.session)
            command = b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                prefix,
                len(tags),
                tags,
                len(merged),
                merged,
            )
            queue.in_flight = True
            self._in_flight += 1
            key = self._store.room_keys(block_id).state  # routes the batch to the room's shard
            out.append((key, command, self._on_reply(block_id, queue, batch, authors)))
        awareness, self._awareness = self._awareness, []
        for channel, data in awareness:
            self._in_flight += 1
            publish = encode_command(self._pipe.publish_command, channel, data)
            out.append((channel, publish, self._on_published_awareness))
        if out:
            self._pipe.send_many(out)
        self._check_idle()

    def _on_reply(
        self, block_id: str, queue: _Queue, batch: list[bytes], authors: list[bytes]
    ) -> Callable[[Any], None]:
        def done(reply: Any) -> None:
            self._in_flight -= 1
            queue.in_flight = False
            if isinstance(reply, Exception):
                queue.updates[:0] = batch
                queue.authors[:0] = authors
                if "NOSCRIPT" in str(reply):
                    self._load_script(block_id)
                elif not isinstance(reply, ConnectionError):
                    log.warning("publish to room %s failed: %s", block_id, reply)
                    self._hold(block_id, queue)
                self._schedule()
                return
            seq, doc_bytes, since = (int(x) for x in reply)
            if seq == -2:  # Redis lost the room: hold until resynced
                queue.updates[:0] = batch
                queue.authors[:0] = authors
                self._hold(block_id, queue)
            elif seq == -1:  # the session is over (the close event is on its way)
                if self._rooms.get(block_id) is queue:
                    del self._rooms[block_id]
                self._on_lost(block_id, queue.session, True)
            else:
                self._on_published(block_id, queue.session, seq, doc_bytes, since)
            if queue.updates:
                self._schedule()
            elif not queue.held and self._rooms.get(block_id) is queue:
                del self._rooms[block_id]
            self._check_idle()

        return done

    def _hold(self, block_id: str, queue: _Queue) -> None:
        """Keep the room's updates until it is resynced, if it is still served here."""
        queue.held = True
        if not self._on_lost(block_id, queue.session, False) and self._rooms.get(block_id) is queue:
            del self._rooms[block_id]

    def _on_published_awareness(self, reply: Any) -> None:
        self._in_flight -= 1
        if isinstance(reply, Exception) and not isinstance(reply, ConnectionError):
            log.debug("awareness publish failed: %s", reply)
        self._check_idle()

    def _load_script(self, block_id: str) -> None:
        """Redis forgot the script (a restart, a new primary): load it on the room's
        shard; queued batches follow it."""
        if self._loading_script:
            return
        self._loading_script = True

        def loaded(reply: Any) -> None:
            self._loading_script = False
            if isinstance(reply, Exception):
                log.warning("loading the publish script failed: %s", reply)
            self._schedule()

        key = self._store.room_keys(block_id).state
        self._pipe.send(key, encode_command("SCRIPT", "LOAD", self._store.publish_script), loaded)

    async def _reconnect(self) -> None:
        failures = 0
        while True:
            try:
                await self._pipe.connect()
            except (OSError, TimeoutError, ConnectionError) as exc:
                failures += 1
                delay = reconnect_delay(failures)
                log.warning("redis (outbox) unavailable: %s; retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._schedule()
            return

    def _check_idle(self) -> None:
        if (
            self._in_flight == 0
            and not self._awareness
            and not any(q.updates and not q.held for q in self._rooms.values())
        ):
            self._idle.set()
