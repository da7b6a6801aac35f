"""Light helpers for class-sized storms: many rooms of raw sockets, blocks made in bulk.

A room here is a mentor and one student, each a `RawSocket` (tests/hardening/tools.py)
with a task that drains its frames; the student types once (one Yjs update made
against the room's template). Thousands of these fit in one test process, where as
many `RoomClient`s (a pycrdt document each) would not.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pycrdt import Doc, Text
from pymongo import MongoClient

from services.gateway.ydoc import template_update
from shared.keys import Keys
from shared.protocol import CloseCode
from tests.hardening.tools import RawSocket, raw_connect
from tests.infra import Fleet, scaled


@dataclass(frozen=True)
class StormBlock:
    id: str
    template: str
    solution: str
    typed: str  # what the room's student types (at the end of the template)

    @property
    def final_code(self) -> str:
        return self.template + self.typed

    @property
    def solved(self) -> bool:
        return self.final_code == self.solution


def mongo_db(fleet: Fleet) -> Any:
    client: MongoClient[dict[str, Any]] = MongoClient(fleet.mongo.url, timeoutMS=120_000)
    return client, client[fleet.env["MONGODB_DB"]]


def insert_blocks(fleet: Fleet, n: int) -> list[StormBlock]:
    """n fresh blocks straight into MongoDB (nobody has read them: caches are cold).
    Every other room's student types the solution."""
    tag = uuid.uuid4().hex[:8]
    blocks: list[StormBlock] = []
    docs: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    for i in range(n):
        template = f"// room {i}\n"
        typed = f"answer({i});\n"
        solution = template + (typed if i % 2 == 0 else "something else\n")
        docs.append(
            {
                "title": f"Storm {tag} {i}",
                "slug": f"storm-{tag}-{i}",
                "language": "javascript",
                "description": "",
                "template": template,
                "solution": solution,
                "created_at": now,
                "updated_at": now,
            }
        )
    client, db = mongo_db(fleet)
    try:
        ids = db["code_blocks"].insert_many(docs).inserted_ids
    finally:
        client.close()
    for i, (doc, oid) in enumerate(zip(docs, ids, strict=True)):
        blocks.append(StormBlock(str(oid), doc["template"], doc["solution"], f"answer({i});\n"))
    return blocks


def typed_update(block: StormBlock) -> bytes:
    doc: Doc[Text] = Doc(client_id=random.randrange(1 << 30, 1 << 31))
    doc.apply_update(template_update(block.template))
    before = doc.get_state()
    text = doc.get("code", type=Text)
    text += block.typed
    return doc.get_update(before)


@dataclass
class Member:
    sock: RawSocket
    role: str
    joined_in: float  # seconds from the first connect to welcome
    drain: asyncio.Task[int] | None = None
    retries: int = 0

    def leave(self) -> None:
        self.sock.abort()


@dataclass
class JoinResult:
    members: list[Member] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)  # close code -> count

    def p95(self) -> float:
        times = sorted(m.joined_in for m in self.members)
        return times[int(len(times) * 0.95) - 1] if times else 0.0

    def summary(self) -> str:
        times = [m.joined_in for m in self.members]
        if not times:
            return f"0 joined, refused {self.refused}"
        return (
            f"{len(times)} joined: median {statistics.median(times) * 1000:.0f} ms, "
            f"p95 {self.p95() * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
            f"{sum(m.retries for m in self.members)} retries after 1013; "
            f"refused {self.refused}"
        )


async def join(ws_base: str, block_id: str) -> Member | int:
    """A member of the room, or the close code the gateway answered instead. Like the
    browser app, a client told 1013 (try again later: Redis was slow) tries again after
    a short, random pause; `Member.retries` counts those."""
    started = time.monotonic()
    for retry in range(5):
        outcome = await _join_once(ws_base, block_id, started)
        if outcome != CloseCode.TRY_AGAIN_LATER:
            break
        await asyncio.sleep(random.uniform(0.2, 1.0) * 2**retry)
    if isinstance(outcome, Member):
        outcome.retries = retry
    return outcome


async def _join_once(ws_base: str, block_id: str, started: float) -> Member | int:
    sock = await raw_connect(ws_base, f"/ws/rooms/{block_id}", timeout=scaled(60))
    if not sock.open:
        sock.abort()
        return sock.handshake.status or -1
    try:
        event = await sock.read_until("welcome", timeout=scaled(60))
    except ConnectionError:
        sock.abort()
        return sock.close_code or -1
    except TimeoutError:
        sock.abort()
        return -1
    member = Member(sock, str(event["role"]), time.monotonic() - started)
    member.drain = asyncio.create_task(sock.until_closed(scaled(900)))
    return member


async def join_all(targets: list[tuple[str, str]]) -> JoinResult:
    """Everyone at once: (ws base url, block id) each."""
    result = JoinResult()
    for outcome in await asyncio.gather(*(join(url, block) for url, block in targets)):
        if isinstance(outcome, Member):
            result.members.append(outcome)
        else:
            result.refused[outcome] = result.refused.get(outcome, 0) + 1
    return result


def room_states(fleet: Fleet, blocks: list[StormBlock], field_name: str) -> list[str | None]:
    keys = Keys(fleet.env["REDIS_PREFIX"])
    client = fleet.redis.client()
    try:
        pipe = client.pipeline(transaction=False)
        for b in blocks:
            pipe.hget(keys.room(b.id).state, field_name)
        return list(pipe.execute())
    finally:
        client.close()


def queue_info(fleet: Fleet) -> tuple[int, dict[str, int]]:
    """Archive queue depth and each consumer's pending count."""
    from shared.keys import ARCHIVE_GROUP

    key = Keys(fleet.env["REDIS_PREFIX"]).archive_queue
    client = fleet.redis.client()
    try:
        depth = int(client.xlen(key))
        try:
            consumers = client.xinfo_consumers(key, ARCHIVE_GROUP)
        except Exception:
            consumers = []
        return depth, {c["name"]: int(c["pending"]) for c in consumers}
    finally:
        client.close()


def archived(fleet: Fleet, blocks: list[StormBlock]) -> list[dict[str, Any]]:
    client, db = mongo_db(fleet)
    try:
        # The whole collection, filtered here: the embedded server answers a large $in
        # far slower than a plain scan.
        ids = {b.id for b in blocks}
        return [d for d in db["room_sessions"].find({}, {"_id": 0}) if d["block_id"] in ids]
    finally:
        client.close()


def check_archive(blocks: list[StormBlock], docs: list[dict[str, Any]]) -> None:
    """Every room archived exactly once, with its final code, solved flag, peak, reason."""
    by_block: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_block.setdefault(doc["block_id"], []).append(doc)
    twice = {b: len(d) for b, d in by_block.items() if len(d) > 1}
    assert not twice, f"archived more than once: {twice}"
    missing = [b.id for b in blocks if b.id not in by_block]
    assert not missing, f"{len(missing)} sessions not archived, e.g. {missing[:3]}"
    for b in blocks:
        doc = by_block[b.id][0]
        assert doc["final_code"] == b.final_code, (b.id, doc["final_code"])
        assert doc["solved"] is b.solved, (b.id, doc)
        assert doc["peak_students"] == 1, (b.id, doc)
        assert doc["reason"] == "mentor-left", (b.id, doc)


class LobbyProbe:
    """GET /api/code-blocks every `interval` seconds until stopped; statuses and times.

    Runs in a thread of its own, so the test's blocking calls cannot delay the probes
    (or inflate their times)."""

    def __init__(self, base_url: str, interval: float = 0.25) -> None:
        self.base_url = base_url
        self.interval = interval
        self.results: list[tuple[int, float, str]] = []  # status, seconds, X-Cache
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lobby-probe", daemon=True)

    def start(self) -> LobbyProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get("/api/code-blocks")
                    status, cache = response.status_code, response.headers.get("X-Cache", "")
                except httpx.HTTPError:
                    status, cache = 0, ""
                self.results.append((status, time.monotonic() - started, cache))
                self._stop.wait(self.interval)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 10)

    def summary(self) -> str:
        times = sorted(t for _, t, _ in self.results)
        if not times:
            return "no lobby probes"
        p99 = times[max(0, int(len(times) * 0.99) - 1)]
        statuses: dict[int, int] = {}
        for status, _, _ in self.results:
            statuses[status] = statuses.get(status, 0) + 1
        caches: dict[str, int] = {}
        for _, _, cache in self.results:
            caches[cache] = caches.get(cache, 0) + 1
        return (
            f"lobby: {len(times)} probes, statuses {statuses}, X-Cache {caches}, "
            f"median {statistics.median(times) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {times[-1] * 1000:.0f} ms"
        )

    def all_ok(self) -> bool:
        return bool(self.results) and all(status == 200 for status, _, _ in self.results)
