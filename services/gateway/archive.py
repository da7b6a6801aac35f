"""The session archive: when a room closes, its story goes to the archive queue.

The closing gateway builds the record and appends it to the Redis stream of the archive
queue (services/gateway/archive_queue.py; docs/redis.md), the records of one event-loop
tick in one round trip. It keeps them until Redis confirms (``WAIT``) that its replicas
hold them, and enqueues them again otherwise: a failover must not lose what the old
primary had not replicated. MongoDB is written by the drainers, never on the close path.
If Redis refuses (queue full) or cannot be reached, the record is written to MongoDB
directly and, failing that, logged in full, so nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pycrdt import Doc, Text
from redis.backoff import FullJitterBackoff

from services.gateway.archive_queue import ArchiveQueue, SessionRecord, insert_sessions
from services.gateway.store import Closed
from services.gateway.ydoc import replay
from shared.replay import build_replay

log = logging.getLogger(__name__)

ENQUEUE_PATIENCE = 10.0  # seconds of Redis trouble before writing to MongoDB directly


def final_doc(closed: Closed) -> Doc[Text]:
    doc: Doc[Text] = Doc()
    replay(doc, closed.snapshot, closed.entries)
    return doc


def final_code(closed: Closed) -> str:
    return str(final_doc(closed).get("code", type=Text))


def session_record(
    block_id: str,
    closed: Closed,
    reason: str,
    now_ms: int,
    replay_max_bytes: int = 1 << 18,
    chat: list[dict[str, Any]] | None = None,
    hints: list[dict[str, Any]] | None = None,
) -> SessionRecord:
    doc = final_doc(closed)
    replay = b""
    if closed.history:
        try:
            replay = (
                build_replay(
                    closed.history,
                    started_at_ms=closed.opened_at_ms,
                    final_state=doc.get_update(),
                    max_bytes=replay_max_bytes,
                    history_cut=closed.history_cut,
                )
                or b""
            )
        except Exception:  # a replay is a nice-to-have; the record must still go out
            log.exception("session %s: building its replay failed", closed.session)
    return SessionRecord(
        session_id=closed.session,
        block_id=block_id,
        started_at=closed.opened_at_ms,
        ended_at=now_ms,
        final_code=str(doc.get("code", type=Text)),
        solved=closed.solved,
        peak_students=closed.peak_students,
        reason=reason,
        replay=base64.b64encode(replay).decode(),
        chat=list(chat or []),
        hints=list(hints or []),
    )


class Replicas:
    """How many replicas must hold an archive entry before its record is forgotten:
    ``setting`` (>= 0), or, with -1, those the queue's node reports connected (asked
    again every `REFRESH` seconds and after every shortfall)."""

    REFRESH = 10.0

    def __init__(self, setting: int, ask: Callable[[], Awaitable[int]]) -> None:
        self._fixed = setting if setting >= 0 else None
        self._ask = ask
        self._known: int | None = None
        self._asked_at = 0.0

    async def wanted(self) -> int:
        if self._fixed is not None:
            return self._fixed
        if self._known is None or time.monotonic() - self._asked_at > self.REFRESH:
            self._known = await self._ask()
            self._asked_at = time.monotonic()
        return self._known

    def shortfall(self) -> None:
        """Fewer replicas confirmed than wanted: ask again before the next attempt (a
        replica may have gone, or a failover promoted a primary with fewer)."""
        self._known = None


class Archiver:
    """Enqueues the records of closed rooms, one round trip per event-loop tick."""

    def __init__(
        self,
        queue: ArchiveQueue,
        collection: Callable[[], Awaitable[Any]],
        write_timeout: float,
        replay_max_bytes: int = 1 << 18,
        replicas: int = -1,
        wait_ms: int = 1000,
    ) -> None:
        self._queue = queue
        self._replicas = Replicas(replicas, queue.connected_replicas)
        self._wait_ms = wait_ms
        self._replay_max = replay_max_bytes
        self._collection = collection
        self._write_timeout = write_timeout
        self._pending: list[SessionRecord] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = FullJitterBackoff(cap=2.0, base=0.1)

    def archive(
        self, block_id: str, closed: Closed, reason: str, chat: dict[str, Any] | None = None
    ) -> None:
        """Queue the record of a closed session; ``chat``: its messages and hints
        (``ChatRelay.archive``)."""
        now = int(time.time() * 1000)
        chat = chat or {}
        messages, hints = list(chat.get("messages", [])), list(chat.get("hints", []))
        if not closed.history:
            self._add(session_record(block_id, closed, reason, now, chat=messages, hints=hints))
            return
        # Replaying a long history to build its record takes a while: not on the loop.
        task = asyncio.create_task(
            self._build(block_id, closed, reason, now, messages, hints), name="replay"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(
        self,
        block_id: str,
        closed: Closed,
        reason: str,
        now: int,
        chat: list[dict[str, Any]],
        hints: list[dict[str, Any]],
    ) -> None:
        record = await asyncio.to_thread(
            session_record, block_id, closed, reason, now, self._replay_max, chat, hints
        )
        self._add(record)

    def _add(self, record: SessionRecord) -> None:
        self._pending.append(record)
        if len(self._pending) == 1:  # first of this tick: flush once the tick is over
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        records, self._pending = self._pending, []
        if records:
            task = asyncio.create_task(self._enqueue(records), name="archive-enqueue")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _enqueue(self, records: list[SessionRecord]) -> None:
        """Until Redis took the records and the replicas it should have confirm them:
        a record confirmed by fewer is sent again (a duplicate entry is archived once)."""
        deadline = time.monotonic() + ENQUEUE_PATIENCE
        attempt = 0
        while True:
            attempt += 1
            try:
                wanted = await self._replicas.wanted()
                taken, acked = await self._queue.enqueue(records, wanted, self._wait_ms)
                if acked >= wanted:
                    break
                self._replicas.shortfall()
                why = f"{acked} of {wanted} replicas confirmed the archive entries"
                if attempt == 1:
                    log.warning("%s; enqueueing %d sessions again", why, len(records))
            except Exception as exc:  # never lose the records: retry, then MongoDB
                why = f"archive queue unreachable ({exc!r})"
                await self._queue.forget_nodes()
            if time.monotonic() > deadline:
                log.warning("%s: writing %d sessions to MongoDB", why, len(records))
                await self._write_directly(records, why)
                return
            await asyncio.sleep(self._backoff.compute(attempt))
        if attempt > 1:
            log.info("%d sessions enqueued after %d attempts", len(records), attempt)
        if taken < len(records):
            refused = records[taken:]
            log.error(
                "archive queue full (ARCHIVE_QUEUE_MAX=%d): %d sessions refused",
                self._queue.max_len,
                len(refused),
            )
            await self._write_directly(refused, "queue full")

    async def _write_directly(self, records: list[SessionRecord], why: str) -> None:
        failed = records
        try:
            outcome = await insert_sessions(await self._collection(), records, self._write_timeout)
            failed = [r for i, r in enumerate(records) if i in outcome.failed]
        except Exception as exc:
            log.error("writing %d sessions to MongoDB failed: %s", len(records), exc)
        for record in failed:
            log.error(
                "session %s not archived (%s): %s",
                record.session_id,
                why,
                record.encode().decode(),
            )

    async def wait(self, grace: float = 5.0) -> None:
        """Give enqueues in flight ``grace`` seconds to finish (at shutdown)."""
        deadline = time.monotonic() + grace
        self._flush_soon()
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
            self._flush_soon()
