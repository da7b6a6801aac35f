"""GET /api/sessions/{sessionId}/replay: admin only, 404 JSON for what is not there, the
stored replay inflated; the sessions list leaves the replay out."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Text

from services.gateway.archive_queue import SessionRecord
from shared.documents import RoomSession
from shared.replay import HistoryEntry, build_replay
from tests.api.test_meta import _validate
from tests.conftest import ADMIN_TOKEN
from tests.infra import make_block

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _replay_blob() -> tuple[bytes, str]:
    doc: Doc[Text] = Doc()
    doc["code"] = text = Text()
    text += "let x = 1;\n"
    history = [HistoryEntry(START, "o", "", doc.get_update())]
    history.append(HistoryEntry(START + 5, "j", "sabc\tAda", b""))
    before = doc.get_state()
    text += "x += 1;\n"
    history.append(HistoryEntry(START + 900, "u", "sabc\tAda", doc.get_update(before)))
    history.append(HistoryEntry(START + 950, "s", "", b""))
    blob = build_replay(history, started_at_ms=START, final_state=doc.get_update(), max_bytes=4096)
    assert blob is not None
    return blob, str(text)


async def _archive(client: httpx.AsyncClient, block_id: str, replay: bytes | None) -> str:
    """A session as the archive drainer stores it (SessionRecord.document)."""
    import base64

    await client.get("/api/code-blocks")  # the api's MongoDB client is ready (this loop's)

    session_id = uuid.uuid4().hex[:24]
    record = SessionRecord(
        session_id=session_id,
        block_id=block_id,
        started_at=START,
        ended_at=START + 60_000,
        final_code="let x = 1;\nx += 1;\n",
        solved=True,
        peak_students=1,
        reason="mentor-left",
        replay=base64.b64encode(replay).decode() if replay else "",
    )
    await RoomSession.get_pymongo_collection().insert_one(record.document())
    return session_id


async def test_replay_is_served_to_admins_only(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    block = (
        await api_client.post("/api/code-blocks", json=make_block(), headers=admin_headers)
    ).json()
    blob, final = _replay_blob()
    session_id = await _archive(api_client, block["id"], blob)
    url = f"/api/sessions/{session_id}/replay"
    doc = (await api_client.get("/api/openapi.json")).json()

    anonymous = await api_client.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"]
    wrong = await api_client.get(url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    in_query = await api_client.get(url + f"?token={ADMIN_TOKEN}")
    assert in_query.status_code == 401  # a token in the URL is never looked at

    response = await api_client.get(url, headers=admin_headers)
    assert response.status_code == 200, response.text
    _validate(doc, "/api/sessions/{sessionId}/replay", "get", response)
    replay = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert replay["session"]["sessionId"] == session_id
    assert replay["session"]["finalCode"] == final
    assert replay["authors"] == [{"id": "abc", "role": "student", "name": "Ada"}]
    assert [s[1] for s in replay["steps"]] == ["o", "j", "u", "s"]
    assert [s[0] for s in replay["steps"]] == [0, 5, 900, 950]
    # Compressed for clients that accept it (httpx asks for gzip and decodes it).
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    plain = await api_client.get(url, headers={**admin_headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == replay

    sessions = await api_client.get(
        f"/api/code-blocks/{block['id']}/sessions", headers=admin_headers
    )
    assert sessions.status_code == 200
    (row,) = sessions.json()
    assert row["replayBytes"] == len(blob) and "replay" not in row


@pytest.mark.parametrize("session_id", ["nope", "0" * 24, "a.b", "x" * 65])
async def test_unknown_session_is_404_json(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str], session_id: str
) -> None:
    response = await api_client.get(f"/api/sessions/{session_id}/replay", headers=admin_headers)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"


async def test_session_without_replay_is_404_no_replay(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    session_id = await _archive(api_client, "0" * 24, None)
    response = await api_client.get(f"/api/sessions/{session_id}/replay", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_replay"


async def test_the_token_is_never_logged(
    api_client: httpx.AsyncClient, admin_headers: dict[str, str], caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    blob, _ = _replay_blob()
    session_id = await _archive(api_client, "0" * 24, blob)
    for headers in (admin_headers, {"Authorization": "Bearer " + ADMIN_TOKEN + "x"}, {}):
        await api_client.get(f"/api/sessions/{session_id}/replay", headers=headers)
        await api_client.get("/api/sessions/unknown/replay", headers=headers)
    assert caplog.records
    assert ADMIN_TOKEN not in caplog.text
