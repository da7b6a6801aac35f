"""The session archive against the embedded MongoDB: a duplicate is recognised by the
driver's DuplicateKeyError, and only on the insert itself."""

from __future__ import annotations

import logging

import pytest
from pymongo import MongoClient

from services.gateway.archive import Archiver
from services.gateway.scripts import Closed
from shared.db import MongoGate, mongo_client
from shared.documents import RoomSession
from tests.conftest import SettingsFactory
from tests.infra import EmbeddedMongo


def closed(session: str) -> Closed:
    return Closed(
        session=session,
        opened_at_ms=1_700_000_000_000,
        snapshot=b"",
        entries=[],
        solved=False,
        peak_students=2,
        mentor="m1",
    )


async def test_a_session_archived_twice_is_written_once_without_retrying(
    settings_factory: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_factory()
    client = mongo_client(settings)
    gate = MongoGate(client, settings)
    try:
        await gate.ensure()  # as in the gateway: the room's block was loaded through it
        archiver = Archiver(gate, settings, attempts=2)
        archiver.archive("b" * 24, closed("s-twice"), "mentor-left")
        await archiver.wait(10)
        with caplog.at_level(logging.WARNING, logger="services.gateway.archive"):
            archiver.archive("b" * 24, closed("s-twice"), "mentor-left")
            await archiver.wait(10)
        assert await RoomSession.find({"session_id": "s-twice"}).count() == 1
        assert caplog.records == []  # a duplicate is success, not a failure to retry
    finally:
        await client.close()


async def test_a_duplicate_key_error_outside_the_insert_is_not_taken_for_success(
    settings_factory: SettingsFactory,
    mongo: EmbeddedMongo,
    mongo_db: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two archived rows with one session id (written before the unique index existed):
    # building the index fails with E11000 (pymongo raises DuplicateKeyError), so
    # Beanie never becomes ready and nothing is written. That is no sign that the
    # record was written: it must be retried and finally logged with its content, not
    # dropped in silence.
    raw: MongoClient[dict[str, object]] = MongoClient(mongo.url, timeoutMS=5000)
    try:
        raw[mongo_db]["room_sessions"].insert_many(
            [{"block_id": "x", "session_id": "dup"}, {"block_id": "y", "session_id": "dup"}]
        )
    finally:
        raw.close()
    settings = settings_factory()
    client = mongo_client(settings)
    gate = MongoGate(client, settings)
    try:
        archiver = Archiver(gate, settings, attempts=2)
        with caplog.at_level(logging.WARNING, logger="services.gateway.archive"):
            archiver.archive("c" * 24, closed("s-lost"), "mentor-left")
            await archiver.wait(20)
        messages = [r.getMessage() for r in caplog.records]
        assert any("archiving session s-lost failed (1)" in m for m in messages), messages
        assert any("session s-lost not archived" in m and "s-lost" in m for m in messages)
    finally:
        await client.close()
