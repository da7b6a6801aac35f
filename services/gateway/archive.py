"""The session archive: when a room closes, its story is written to MongoDB.

Written by the gateway that closed the room, in the background, with a few retries
(MongoDB may be briefly unreachable); a record that still cannot be written is logged
with its content so nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from services.gateway.store import Closed
from services.gateway.ydoc import log_text
from shared.db import MongoGate, op_timeout
from shared.documents import RoomSession
from shared.settings import Settings

log = logging.getLogger(__name__)


class Archiver:
    def __init__(self, gate: MongoGate, settings: Settings, attempts: int = 5) -> None:
        self._gate = gate
        self._timeout = op_timeout(settings)
        self._attempts = attempts
        self._tasks: set[asyncio.Task[Any]] = set()

    def archive(self, block_id: str, closed: Closed, reason: str) -> None:
        record = RoomSession(
            block_id=block_id,
            session_id=closed.session,
            started_at=datetime.fromtimestamp(closed.opened_at_ms / 1000, UTC),
            ended_at=datetime.now(UTC),
            final_code=log_text(closed.snapshot, closed.entries),
            solved=closed.solved,
            peak_students=closed.peak_students,
            reason=reason,
        )
        task = asyncio.create_task(self._write(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, record: RoomSession) -> None:
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                async with asyncio.timeout(self._timeout * 2):
                    await self._gate.ensure()
                    await record.insert()
                return
            except Exception as exc:
                if "duplicate key" in str(exc).lower():
                    return  # another attempt already wrote it
                log.warning("archiving session %s failed (%d): %s", record.session_id, attempt, exc)
                await asyncio.sleep(delay)
                delay *= 2
        log.error("session %s not archived: %s", record.session_id, record.model_dump_json())

    async def wait(self, grace: float = 5.0) -> None:
        """Give archive writes in flight ``grace`` seconds to finish (at shutdown)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
