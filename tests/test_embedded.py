"""The embedded MongoDB (services/embedded.py) still enforces every uniqueness rule after
skipping mongoeco's full-collection scan per insert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from pymongo import ASCENDING, IndexModel, MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.infra import EmbeddedMongo

pytestmark = pytest.mark.slow


@pytest.fixture
def collection(mongo: EmbeddedMongo, mongo_db: str) -> Iterator[Collection[dict[str, Any]]]:
    if mongo.external:
        pytest.skip("checks the embedded server")
    client: MongoClient[dict[str, Any]] = MongoClient(mongo.url, timeoutMS=10_000)
    col = client[mongo_db]["sessions"]
    col.create_indexes([IndexModel([("session_id", ASCENDING)], unique=True)])
    yield col
    client.close()


def test_duplicate_ids_and_unique_keys_are_still_refused(
    collection: Collection[dict[str, Any]],
) -> None:
    oid = ObjectId()
    collection.insert_one({"_id": oid, "session_id": "a"})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"_id": oid, "session_id": "b"})
    collection.insert_one({"_id": "text-id", "session_id": "c"})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"_id": "text-id", "session_id": "d"})
    collection.insert_one({"_id": 1, "session_id": "e"})
    with pytest.raises(DuplicateKeyError):  # numeric ids keep mongoeco's full check
        collection.insert_one({"_id": 1.0, "session_id": "f"})
    with pytest.raises(BulkWriteError) as raised:
        collection.insert_many(
            [{"session_id": "a"}, {"session_id": "g"}, {"session_id": "c"}], ordered=False
        )
    codes = [e["code"] for e in raised.value.details["writeErrors"]]
    assert codes == [11000, 11000]
    assert sorted(d["session_id"] for d in collection.find()) == ["a", "c", "e", "g"]
