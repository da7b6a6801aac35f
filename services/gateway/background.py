"""Fire-and-forget tasks of the gateway, kept referenced until they end.

asyncio keeps only weak references to tasks: one nobody holds may be collected
mid-flight. Every background task of the gateway (closing a socket, compacting a room,
reporting a solved check) is started here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coro: Coroutine[None, None, object]) -> asyncio.Task[object]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel(self) -> None:
        """At shutdown: stop what is still running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
