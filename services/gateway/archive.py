"""The session archive: when a room closes, its story goes to the archive queue.

The closing gateway builds the record and appends it to the Redis stream of the archive
queue (services/gateway/archive_queue.py; docs/redis.md), the records of one event-loop
tick in one round trip. MongoDB is written by the drainers, never on the close path. If
Redis refuses (queue full) or cannot be reached, the record is written to MongoDB
directly and, failing that, logged in full, so nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.backoff import FullJitterBackoff
from redis.exceptions import RedisError

from services.gateway.archive_queue import ArchiveQueue, SessionRecord, insert_sessions
from services.gateway.store import Closed
from services.gateway.ydoc import log_text

log = logging.getLogger(__name__)

ENQUEUE_PATIENCE = 10.0  # seconds of Redis trouble before writing to MongoDB directly


def session_record(block_id: str, closed: Closed, reason: str, now_ms: int) -> SessionRecord:
    return SessionRecord(
        session_id=closed.session,
        block_id=block_id,
        started_at=closed.opened_at_ms,
        ended_at=now_ms,
        final_code=log_text(closed.snapshot, closed.entries),
        solved=closed.solved,
        peak_students=closed.peak_students,
        reason=reason,
    )


class Archiver:
    """Enqueues the records of closed rooms, one round trip per event-loop tick."""

    def __init__(
        self,
        queue: ArchiveQueue,
        collection: Callable[[], Awaitable[Any]],
        write_timeout: float,
    ) -> None:
        self._queue = queue
        self._collection = collection
        self._write_timeout = write_timeout
        self._pending: list[SessionRecord] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = FullJitterBackoff(cap=2.0, base=0.1)

    def archive(self, block_id: str, closed: Closed, reason: str) -> None:
        self._pending.append(session_record(block_id, closed, reason, int(time.time() * 1000)))
        if len(self._pending) == 1:  # first of this tick: flush once the tick is over
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        records, self._pending = self._pending, []
        if records:
            task = asyncio.create_task(self._enqueue(records), name="archive-enqueue")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _enqueue(self, records: list[SessionRecord]) -> None:
        deadline = time.monotonic() + ENQUEUE_PATIENCE
        attempt = 0
        while True:
            attempt += 1
            try:
                taken = await self._queue.enqueue(records)
                break
            except RedisError as exc:
                if time.monotonic() > deadline:
                    log.warning("archive queue unreachable (%s): writing to MongoDB", exc)
                    await self._write_directly(records, "queue unreachable")
                    return
                await asyncio.sleep(self._backoff.compute(attempt))
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
        self._flush_soon()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
