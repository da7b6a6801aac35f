"""The archive drainer: one task per gateway moving closed sessions from the queue to MongoDB.

It reads batches from the archive stream (its own pending entries first, then entries a
dead consumer left, then new ones), writes each batch with one idempotent insert, and
acknowledges an entry only once MongoDB holds its session (a duplicate is success).
Design and failure cases: docs/redis.md ("The archive queue").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.backoff import FullJitterBackoff

from services.gateway.archive_queue import ArchiveQueue, Json, SessionRecord, insert_sessions

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DrainStats:
    archived: int = 0
    duplicates: int = 0
    batches: int = 0
    failures: int = 0
    depth: int = 0
    failing_since: float | None = None  # monotonic time of the first failure in a row
    last_error: str = ""

    def details(self) -> Json:
        """For /readyz: the depth and whether MongoDB writes currently fail."""
        out: Json = {"queue_depth": self.depth, "archived": self.archived}
        if self.failing_since is not None:
            out["failing_for_seconds"] = round(time.monotonic() - self.failing_since, 1)
            out["last_error"] = self.last_error[:200]
        return out


class Drainer:
    """Moves closed sessions from the queue to MongoDB, a batch at a time.

    `collection` is called for every batch: it returns the MongoDB collection once the
    database is ready (raising while it is not), so a drainer started before MongoDB is
    reachable just backs off."""

    IDLE_CONSUMER_MS = 3_600_000
    MAX_DELAY = 5.0

    def __init__(
        self,
        queue: ArchiveQueue,
        consumer: str,
        collection: Any,
        *,
        batch: int,
        claim_idle_seconds: float,
        write_timeout: float,
        block_ms: int = 1000,
        stats: DrainStats | None = None,
    ) -> None:
        self.queue = queue
        self.consumer = consumer
        self._collection = collection
        self.batch = batch
        self._size = batch  # adapts: halves after a timeout, grows back after successes
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.write_timeout = write_timeout
        self.block_ms = block_ms
        self.stats = stats if stats is not None else DrainStats()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._own_pending = True  # at start: whatever a previous life left us
        self._next_claim = 0.0
        self._backoff = FullJitterBackoff(cap=self.MAX_DELAY, base=0.5)
        # The consumer group exists (XGROUP CREATE answers BUSYGROUP once it does: asking
        # every loop cost a Redis error and an exception cycle for the collector a second).
        self._group_ready = False

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="archive-drainer")
        self._watch = asyncio.create_task(self._watch_depth(), name="archive-depth")

    async def _watch_depth(self, interval: float = 1.0) -> None:
        """The depth, once a second, even while a batch hangs on MongoDB."""
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):
                self.stats.depth = await self.queue.depth()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()

    async def stop(self, grace: float = 2.0) -> None:
        """Let a batch in flight finish (up to grace), then stop; unacknowledged entries
        stay pending and are claimed by another drainer after the idle time."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.cancel()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=grace)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            if await self.queue.pending_of(self.consumer) == 0:
                await self.queue.drop_consumer(self.consumer)

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._group_ready:  # once, and again after any failure (NOGROUP)
                    await self.queue.ensure_group()
                    self._group_ready = True
                entries = await self._next_entries()
                if entries:
                    await self._drain(entries)
                failures = 0
                self.stats.failing_since = None
            except Exception as exc:
                self._group_ready = False
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if self.stats.failing_since is None:
                    self.stats.failing_since = time.monotonic()
                self._own_pending = True
                if isinstance(exc, TimeoutError) or getattr(exc, "timeout", False):
                    self._size = max(1, self._size // 2)
                delay = self._backoff.compute(failures)
                log.warning(
                    "archive batch failed (%s); queue depth %d; retrying in %.1fs",
                    self.stats.last_error,
                    self.stats.depth,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()

    async def _next_entries(self) -> list[tuple[bytes, Any]]:
        n = self._size
        if self._own_pending:
            entries = await self.queue.read_own_pending(self.consumer, n)
            if entries:
                return entries
            self._own_pending = False
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(0.5, self.claim_idle_ms / 4000)
            entries = await self.queue.claim_idle(self.consumer, self.claim_idle_ms, n)
            if entries:
                log.info("claimed %d archive entries left pending by another", len(entries))
                return entries
            with contextlib.suppress(Exception):
                await self.queue.forget_idle_consumers(self.consumer, self.IDLE_CONSUMER_MS)
        if self._stopping.is_set():
            return []
        return await self.queue.read_new(self.consumer, n, self.block_ms)

    async def _keep(self, ids: list[bytes]) -> None:
        """While a batch is being written, keep its entries ours (see `ArchiveQueue.keep`)."""
        while True:
            await asyncio.sleep(self.claim_idle_ms / 3000)
            with contextlib.suppress(Exception):
                await self.queue.keep(self.consumer, ids)

    async def _drain(self, entries: list[tuple[bytes, Any]]) -> None:
        started = time.monotonic()
        ids: list[bytes] = []
        records: list[SessionRecord] = []
        record_ids: list[bytes] = []
        for eid, fields in entries:
            if not fields:  # deleted while pending: nothing left to archive
                ids.append(eid)
                continue
            raw = fields.get(b"r") if isinstance(fields, dict) else None
            try:
                if raw is None:
                    raise ValueError("no record field")
                records.append(SessionRecord.decode(raw))
                record_ids.append(eid)
            except (ValueError, TypeError) as exc:
                log.error("archive entry %r is not a session record (%s): %r", eid, exc, fields)
                ids.append(eid)  # it can never be written: drop it, loudly
        self._own_pending = True  # until this batch is acknowledged
        keeper = asyncio.create_task(self._keep(record_ids), name="archive-keep")
        try:
            outcome = await insert_sessions(await self._collection(), records, self.write_timeout)
        finally:
            keeper.cancel()
        for index, eid in enumerate(record_ids):
            if index in outcome.failed:
                log.error(
                    "session %s not archived (kept in the queue): %s",
                    records[index].session_id,
                    outcome.failed[index],
                )
            else:
                ids.append(eid)
        self.stats.depth = await self.queue.acknowledge(ids)
        if not outcome.failed:
            self._own_pending = False
        # Additive increase, halving on a timeout: the batch settles at what MongoDB
        # writes within the write timeout instead of oscillating.
        self._size = min(self.batch, self._size + max(1, self._size // 4))
        self.stats.archived += outcome.inserted + outcome.duplicates
        self.stats.duplicates += outcome.duplicates
        self.stats.batches += 1
        log.info(
            "archived %d sessions (%d new, %d already there, %d failed) in %.0f ms; queue depth %d",
            len(records) - len(outcome.failed),
            outcome.inserted,
            outcome.duplicates,
            len(outcome.failed),
            (time.monotonic() - started) * 1000,
            self.stats.depth,
        )
        if outcome.failed:
            raise RuntimeError(f"{len(outcome.failed)} sessions could not be written")
