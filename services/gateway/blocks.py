"""Code blocks as the gateway needs them: template and solution, cached briefly.

The gateway reads MongoDB only when a room is entered, never per keystroke. A block
stays cached for ``BLOCK_CACHE_SECONDS`` so that a room keeps working (and people keep
joining it) while MongoDB is briefly unreachable.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bson import ObjectId

from shared.db import MongoGate, op_timeout
from shared.documents import CodeBlock, is_block_id
from shared.settings import Settings


class BlockUnavailable(Exception):
    """MongoDB could not be asked in time."""


@dataclass(frozen=True, slots=True)
class Block:
    id: str
    template: str
    solution: str


class BlockSource:
    def __init__(self, gate: MongoGate, settings: Settings) -> None:
        self._gate = gate
        self._ttl = settings.block_cache_seconds
        self._timeout = op_timeout(settings)
        self._cache: dict[str, tuple[float, Block | None]] = {}

    @staticmethod
    def valid_id(block_id: str) -> bool:
        return is_block_id(block_id)

    async def get(self, block_id: str) -> Block | None:
        """The block, None if there is no such block; raises BlockUnavailable."""
        if not self.valid_id(block_id):
            return None
        now = time.monotonic()
        cached = self._cache.get(block_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            async with asyncio.timeout(self._timeout):
                await self._gate.ensure()
                doc = await CodeBlock.get(ObjectId(block_id))
        except Exception as exc:
            if cached is not None and cached[1] is not None:
                return cached[1]  # stale but better than refusing a live room
            raise BlockUnavailable(str(exc)) from exc
        block = Block(block_id, doc.template, doc.solution) if doc is not None else None
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[block_id] = (now, block)
        return block
