"""Runs shared with the room, with raw clients on two real gateways and a real Redis
(docs/protocol.md, "Runs"): relayed to everyone on every gateway with the author taken
from the socket, kept for late joiners, watchers' runs and runs over the rate dropped,
bad run results closing only their sender (4400), a flood closing it with 4429, and a
run never touching the text or the solved flag."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from services.gateway.eventrelay import FLOOD
from services.gateway.runs import MAX_RUN_FRAME, RUN_BURST
from shared.protocol import CloseCode
from shared.ywire import encode_var_bytes
from tests.fleet.conftest import Blocks
from tests.infra import Fleet
from tests.yclient import RoomClient, wait_for

pytestmark = [pytest.mark.fleet]

RESULT: dict[str, Any] = {
    "type": "run-result",
    "language": "javascript",
    "state": "ok",
    "durationMs": 7,
    "output": "3\n",
    "truncated": False,
    "error": None,
    "line": None,
}


def run_frame(**changes: Any) -> bytes:
    return b"\x64" + encode_var_bytes(orjson.dumps({**RESULT, **changes}))


async def join(url: str, block_id: str, **kw: Any) -> RoomClient:
    return await RoomClient(url, block_id, **kw).connect()


def runs_seen(client: RoomClient) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in client.events:
        if event["type"] == "run":
            out.append(event["run"])
        elif event["type"] == "runs":
            out.extend(event["runs"])
    return out


async def close_all(*clients: RoomClient) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def test_a_run_reaches_everyone_on_every_gateway_and_late_joiners(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    watcher = await join(gw[0], block.id, role="watcher")
    await student.set_awareness('{"user": {"name": "Ada", "color": "#123456"}}')
    await wait_for(lambda: len(mentor.awareness) == 1)
    await student.send_raw(run_frame(output="<b>3</b>\n"))
    for client in (mentor, student, watcher):
        await wait_for(lambda c=client: len(runs_seen(c)) == 1)  # type: ignore[misc]
    run = runs_seen(mentor)[0]
    assert run["clientId"] == student.client_id and run["role"] == "student"
    assert run["name"] == "Ada" and run["output"] == "<b>3</b>\n"
    assert run["language"] == "javascript" and run["state"] == "ok" and run["durationMs"] == 7
    assert runs_seen(watcher) == [run] == runs_seen(student)
    # The mentor's run is shared too.
    await mentor.send_raw(run_frame(state="timeout", output=""))
    await wait_for(lambda: len(runs_seen(student)) == 2)
    assert runs_seen(student)[1]["role"] == "mentor"
    assert runs_seen(student)[1]["name"] == "Guest"  # no awareness state: no name
    # A late joiner (a reconnecting mentor too) gets the room's runs after its welcome.
    late = await join(gw[1], block.id)
    await wait_for(lambda: late.count("runs") == 1)
    assert [r["id"] for r in runs_seen(late)] == [r["id"] for r in runs_seen(mentor)]
    assert [e["type"] for e in late.events].index("welcome") == 0
    await close_all(mentor, student, watcher, late)


async def test_watchers_runs_stay_local(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    watcher = await join(gw[1], block.id, role="watcher")
    await watcher.send_raw(run_frame())
    await watcher.send_raw(run_frame(state="error", error="boom", line=1))
    # A later run from the mentor arrives: the watcher's, sent before it, never did.
    await mentor.send_raw(run_frame(output="mentor\n"))
    await wait_for(lambda: len(runs_seen(watcher)) == 1)
    assert [r["output"] for r in runs_seen(mentor)] == ["mentor\n"]
    assert watcher.connected
    late = await join(gw[0], block.id)
    await wait_for(lambda: late.count("runs") == 1)
    assert [r["output"] for r in runs_seen(late)] == ["mentor\n"]
    await close_all(mentor, watcher, late)


BAD = {
    "oversized": b"\x64" + encode_var_bytes(b'{"type":"run-result","x":"' + b"x" * MAX_RUN_FRAME),
    "malformed": b"\x64" + encode_var_bytes(b'{"type": "run-result",'),
    "invalid utf-8": b"\x64" + encode_var_bytes(b'{"type":"run-result","output":"\xc3("}'),
    "wrong type": run_frame(type="solved"),
    "wrong shape": run_frame(durationMs="soon"),
    "author given": run_frame(clientId="someone-else"),
    "output over 4 KB": run_frame(output="x" * 5000),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_run_results_close_the_sender_only(
    blocks: Blocks, gw: list[str], case: str
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    sender = await join(gw[1], block.id)
    other = await join(gw[1], block.id)
    await sender.send_raw(BAD[case])
    await sender.wait_for(sender.closed.is_set, 5)
    assert sender.close_code == CloseCode.BAD_REQUEST
    # Nobody else was touched: the room goes on, and nothing was relayed.
    other.type_at_end("// still here\n")
    await wait_for(lambda: mentor.value.endswith("// still here\n"))
    await other.send_raw(run_frame(output="after\n"))
    await wait_for(lambda: len(runs_seen(mentor)) == 1)
    assert [r["output"] for r in runs_seen(mentor)] == ["after\n"]
    assert other.connected and mentor.connected
    await close_all(mentor, sender, other)


async def test_too_frequent_runs_are_dropped_and_a_flood_is_closed(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    for i in range(RUN_BURST + 3):
        await student.send_raw(run_frame(output=f"{i}\n"))
    await wait_for(lambda: len(runs_seen(mentor)) >= RUN_BURST)
    await student.send_raw(run_frame(output="marker\n"))  # over the budget too
    await mentor.send_raw(run_frame(output="mentor\n"))
    await wait_for(lambda: any(r["output"] == "mentor\n" for r in runs_seen(student)))
    relayed = [r["output"] for r in runs_seen(mentor) if r["role"] == "student"]
    # The burst went through (one more if a second passed meanwhile on a slow machine).
    assert relayed[:RUN_BURST] == [f"{i}\n" for i in range(RUN_BURST)]
    assert len(relayed) <= RUN_BURST + 1 and "marker\n" not in relayed
    assert student.connected
    for _ in range(FLOOD):
        await student.send_raw(run_frame())
    await student.wait_for(student.closed.is_set, 5)
    assert student.close_code == CloseCode.RATE_LIMITED
    assert mentor.connected
    await close_all(mentor, student)


async def test_a_run_never_changes_the_text_or_solves(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    await student.send_raw(run_frame(output=block.solution))
    await wait_for(lambda: len(runs_seen(mentor)) == 1)
    assert mentor.value == block.template and mentor.count("solved") == 0
    student.set_text(block.solution)
    await wait_for(lambda: mentor.count("solved") == 1)
    await close_all(mentor, student)


async def test_a_new_session_starts_without_runs(room_fleet: Fleet, blocks: Blocks) -> None:
    gw = [g.ws_url + "/ws/rooms" for g in room_fleet.gateways]
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    await student.send_raw(run_frame())
    await wait_for(lambda: len(runs_seen(mentor)) == 1)
    await mentor.close()
    await student.wait_for(student.closed.is_set, 10)
    assert student.close_code == CloseCode.ROOM_CLOSED
    again = await join(gw[1], block.id)
    newcomer = await join(gw[0], block.id)
    await again.send_raw(run_frame(output="new session\n"))
    await wait_for(lambda: len(runs_seen(newcomer)) == 1)
    late = await join(gw[0], block.id)
    await wait_for(lambda: late.count("runs") == 1)
    assert [r["output"] for r in runs_seen(late)] == ["new session\n"]
    await close_all(again, newcomer, late, student)
