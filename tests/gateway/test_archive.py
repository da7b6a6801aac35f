"""The archive's MongoDB write against the embedded MongoDB: a duplicate session id is
recognised by the driver's error code on the insert itself (11000) and counts as
archived; the queue's own behaviour is tested in the archive queue's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from services.gateway.archive_queue import SessionRecord, insert_sessions
from tests.infra import EmbeddedMongo


def record(session: str) -> SessionRecord:
    return SessionRecord(
        session_id=session,
        block_id="b" * 24,
        started_at=1_700_000_000_000,
        ended_at=1_700_000_060_000,
        final_code="print(1)\n",
        solved=False,
        peak_students=2,
        reason="mentor-left",
    )


@pytest.fixture
async def sessions(mongo: EmbeddedMongo, mongo_db: str) -> AsyncIterator[AsyncCollection[Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url, timeoutMS=5000)
    collection = client[mongo_db]["room_sessions"]
    await collection.create_index("session_id", unique=True)
    yield collection
    await client.close()


async def test_a_session_archived_twice_is_one_document_and_counts_as_archived(
    sessions: AsyncCollection[Any],
) -> None:
    first = await insert_sessions(sessions, [record("s-twice")], 5)
    again = await insert_sessions(sessions, [record("s-twice"), record("s-new")], 5)
    assert (first.inserted, first.duplicates, first.failed) == (1, 0, {})
    assert (again.inserted, again.duplicates, again.failed) == (1, 1, {})
    assert await sessions.count_documents({"session_id": "s-twice"}) == 1
