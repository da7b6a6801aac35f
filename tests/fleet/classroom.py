"""A classroom load for fault tests: rooms of a mentor and typing students, spread
over several gateways, whose clients reconnect (to another gateway) like browsers do.

``typed`` records every token each student typed; ``converged`` checks that every
client of a room holds the same text and that it contains every token typed there.
Tokens are only ever inserted between other tokens, never inside one.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from tests.yclient import RoomClient, wait_for


def boundaries(text: str) -> list[int]:
    depth, out = 0, []
    for i, ch in enumerate(text):
        if depth == 0:
            out.append(i)
        depth += (ch == "<") - (ch == ">")
    if depth == 0:
        out.append(len(text))
    return out


@dataclass
class Room:
    block_id: str
    mentor: RoomClient
    students: list[RoomClient]
    typed: list[str] = field(default_factory=list)

    @property
    def clients(self) -> list[RoomClient]:
        return [self.mentor, *self.students]


class Classroom:
    def __init__(self, urls: list[str], block_ids: list[str], students: int, seed: int = 1) -> None:
        self.urls = urls
        self.block_ids = block_ids
        self.per_room = students
        self.rng = random.Random(seed)
        self.rooms: list[Room] = []
        self._typing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        n = len(self.urls)
        for r, block_id in enumerate(self.block_ids):
            mentor = await RoomClient(self.urls[r % n], block_id, fallbacks=self.urls).connect()
            assert mentor.role == "mentor"
            students = [
                RoomClient(self.urls[(r + j + 1) % n], block_id, fallbacks=self.urls)
                for j in range(self.per_room)
            ]
            await asyncio.gather(*(s.connect() for s in students))
            assert all(s.role == "student" for s in students)
            self.rooms.append(Room(block_id, mentor, students))

    @property
    def clients(self) -> list[RoomClient]:
        return [c for room in self.rooms for c in room.clients]

    def on(self, url: str) -> list[RoomClient]:
        return [c for c in self.clients if c.base_url == url.rstrip("/")]

    def start_typing(self, interval: float = 0.2) -> None:
        self._typing = True
        for r, room in enumerate(self.rooms):
            for j, student in enumerate(room.students):
                self._tasks.append(
                    asyncio.create_task(self._type(room, student, f"{r}.{j}", interval))
                )

    async def _type(self, room: Room, student: RoomClient, tag: str, interval: float) -> None:
        await asyncio.sleep(self.rng.random() * interval)
        k = 0
        while self._typing:
            if student.connected:
                token = f"<{tag}.{k}>"
                k += 1
                student.insert(self.rng.choice(boundaries(student.value)), token)
                room.typed.append(token)
            await asyncio.sleep(interval)

    async def stop_typing(self) -> int:
        self._typing = False
        await asyncio.gather(*self._tasks)
        self._tasks.clear()
        return sum(len(room.typed) for room in self.rooms)

    def missing(self) -> dict[str, int]:
        """Per client: how many of its room's tokens it lacks (only the non-zero ones)."""
        out = {}
        for r, room in enumerate(self.rooms):
            for i, client in enumerate(room.clients):
                lacking = sum(1 for t in room.typed if t not in client.value)
                if lacking:
                    out[f"room{r}/client{i}"] = lacking
        return out

    def converged(self) -> bool:
        return not self.missing() and all(
            len({c.value for c in room.clients}) == 1 for room in self.rooms
        )

    async def wait_converged(self, timeout: float = 15.0) -> float:
        started = time.monotonic()
        try:
            await wait_for(self.converged, timeout)
        except TimeoutError:
            raise AssertionError(f"not converged; missing tokens: {self.missing()}") from None
        return time.monotonic() - started

    def presence_ok(self, mentor: bool = True) -> bool:
        for room in self.rooms:
            want = (mentor, len(room.students), 0)
            for client in room.clients:
                event = client.last("presence")
                if event is None or (event["mentor"], event["students"], event["watchers"]) != want:
                    return False
        return True

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
