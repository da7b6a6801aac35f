"""The pure part of shared runs (services/gateway/runs.py): the check of a client's
``run-result``, the per-member budget, the author taken from the socket, the codec."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.gateway import channel
from services.gateway.eventrelay import FLOOD, Budget, Incoming, display_name
from services.gateway.inbound import react
from services.gateway.room import Limits, RoomCore
from services.gateway.runs import (
    MAX_RUN_FRAME,
    RUN_BURST,
    RUNS_KEPT,
    RunRefused,
    decide,
    parse_run_result,
    recent_runs,
    run_event,
)
from shared import protocol
from shared.protocol import CloseCode, Role
from shared.ywire import encode_var_bytes

GOOD: dict[str, Any] = {
    "type": "run-result",
    "language": "python",
    "state": "ok",
    "durationMs": 12,
    "output": "1 2 Fizz\n",
    "truncated": False,
    "error": None,
    "line": None,
}


def frame_of(body: bytes) -> bytes:
    return b"\x64" + encode_var_bytes(body)


def frame(**changes: Any) -> bytes:
    message = {**GOOD, **changes}
    return frame_of(orjson.dumps({k: v for k, v in message.items() if v is not ...}))


def run(
    data: bytes,
    *,
    role: Role,
    allowed: bool | None = True,
    client_id: str = "c",
    states: list[str] | None = None,
    event_id: str = "r",
    at_ms: int = 1,
) -> Incoming:
    """A run-result as the shell hands it to ``decide``."""
    return Incoming(
        data,
        role=role,
        client_id=client_id,
        awareness_ids=[],
        awareness_states=states or [],
        allowed=allowed,
        event_id=event_id,
        at_ms=at_ms,
    )


def test_a_valid_result_is_taken_field_by_field() -> None:
    assert parse_run_result(frame()) == {k: v for k, v in GOOD.items() if k != "type"}
    minimal = frame(truncated=..., error=..., line=...)
    assert parse_run_result(minimal)["truncated"] is False
    errored = parse_run_result(frame(state="error", error="NameError: x", line=3))
    assert (errored["error"], errored["line"]) == ("NameError: x", 3)
    # 4 KB of output escaped as JSON (control characters: six bytes each) still fits.
    assert parse_run_result(frame(output="\x01" * 4096))["output"] == "\x01" * 4096
    assert parse_run_result(frame(output="é" * 2048))["output"] == "é" * 2048


BAD: list[tuple[str, bytes]] = [
    ("oversized", frame_of(b'{"type":"run-result","output":"' + b"x" * MAX_RUN_FRAME + b'"}')),
    ("not json", frame_of(b"{nope")),
    ("invalid utf-8", frame_of(b'{"type":"run-result","output":"\xff"}')),
    ("lone surrogate", frame(output="\\ud800").replace(b"\\\\ud800", b"\\ud800")),
    ("not an object", frame_of(b"[1, 2]")),
    ("other type", frame(type="welcome")),
    ("no type", frame(type=...)),
    ("extra field", frame(name="Mallory")),
    ("author field", frame(role="mentor")),
    ("missing output", frame(output=...)),
    ("language", frame(language="ruby")),
    ("state", frame(state="solved")),
    ("duration negative", frame(durationMs=-1)),
    ("duration bool", frame(durationMs=True)),
    ("duration float", frame(durationMs=1.5)),
    ("duration huge", frame(durationMs=10**12)),
    ("output too long", frame(output="x" * 4097)),
    ("output multibyte too long", frame(output="é" * 2049)),
    ("output not text", frame(output=["a"])),
    ("error too long", frame(error="e" * 513)),
    ("error not text", frame(error=1)),
    ("line zero", frame(line=0)),
    ("line text", frame(line="3")),
    ("truncated not bool", frame(truncated=1)),
    ("length mismatch", frame() + b"x"),
    ("truncated varint", b"\x64\xff"),
    ("not control", b"\x00" + encode_var_bytes(orjson.dumps(GOOD))),
]


@pytest.mark.parametrize(("name", "data"), BAD, ids=[n for n, _ in BAD])
def test_bad_results_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(RunRefused):
        parse_run_result(data)
    decision = decide(run(data, role="student", client_id="c1", event_id="r1", at_ms=1))
    assert decision.close == CloseCode.BAD_REQUEST and decision.event is None


def test_the_lone_surrogate_case_really_holds_one() -> None:
    data = dict(BAD)["lone surrogate"]
    assert b"\\ud800" in data and b"\\\\" not in data


def test_the_author_comes_from_the_socket_never_the_message() -> None:
    states = ['{"user": {"name": "  Ada\\u0007 ", "color": "#123456"}}']
    decision = decide(
        run(frame(), role="student", client_id="client-7", states=states, event_id="r9", at_ms=1234)
    )
    assert decision.close is None and decision.event is not None
    event = orjson.loads(decision.event)
    assert event["type"] == "run"
    assert event["run"] == {
        "id": "r9",
        "clientId": "client-7",
        "name": "Ada",
        "role": "student",
        **{k: v for k, v in GOOD.items() if k != "type"},
        "at": 1234,
    }


@pytest.mark.parametrize(
    ("states", "name"),
    [
        ([], "Guest"),
        (["not json"], "Guest"),
        (['{"user": {"name": 5}}'], "Guest"),
        (['{"user": "x"}', '{"user": {"name": "Bo"}}'], "Bo"),
        (['{"user": {"name": "' + "n" * 100 + '"}}'], "n" * 64),
        (['{"user": {"name": "\\u0000\\n"}}'], "Guest"),
    ],
)
def test_display_name(states: list[str], name: str) -> None:
    assert display_name(states) == name


def test_watchers_runs_and_runs_over_budget_are_dropped_and_a_flood_closes() -> None:
    watcher = decide(run(frame(), role="watcher"))
    assert watcher.event is None and watcher.close is None
    assert decide(run(frame(), role="mentor")).event is not None
    over = decide(run(frame(), role="student", allowed=False))
    assert over.event is None and over.close is None
    flood = decide(run(frame(), role="student", allowed=None))
    assert flood.close == CloseCode.RATE_LIMITED
    # A bad frame is refused as bad even from a watcher.
    assert decide(run(frame(state="x"), role="watcher")).close == 4400


def test_budget_burst_rate_and_flood() -> None:
    budget = Budget(rate=1.0, burst=RUN_BURST)
    verdicts = [budget.take("m1", 100.0) for _ in range(RUN_BURST + FLOOD)]
    assert verdicts[:RUN_BURST] == [True] * RUN_BURST
    assert verdicts[RUN_BURST:-1] == [False] * (FLOOD - 1)
    assert verdicts[-1] is None
    assert budget.take("m2", 100.0) is True  # members are counted apart
    fresh = Budget(rate=1.0, burst=2)
    assert [fresh.take("m", 0.0) for _ in range(3)] == [True, True, False]
    assert fresh.take("m", 0.5) is False  # half a token back: still short
    assert fresh.take("m", 2.6) is False  # refused runs count too (a debt of 1.5)
    assert fresh.take("m", 5.0) is True  # paid back at one a second
    assert fresh.take("m", 100.0) is True and fresh.take("m", 100.0) is True
    assert fresh.take("m", 100.0) is False  # never more than the burst


def test_budget_forgets_members_when_it_holds_too_many() -> None:
    budget = Budget(rate=1.0, burst=2)
    budget.MAX_MEMBERS = 10
    for i in range(10):
        budget.take(f"m{i}", 0.0)
    budget.take("m0", 0.0)  # m0 is at zero: kept
    assert budget.take("new", 1.5) is True  # everyone else is full again by now
    assert set(budget._buckets) == {"m0", "new"}


def _loaded_room() -> RoomCore:
    return RoomCore("b", "s1", "e1", None, Limits())


def test_channel_message_and_joiner_event() -> None:
    event = run_event(
        {"state": "ok"}, run_id="r1", client_id="c", name="N", role="student", at_ms=5
    )
    message = channel.decode(channel.encode_run(event))
    assert message == channel.RunShared(event)
    (frame,) = react(_loaded_room(), message, b"gw").fanout
    assert protocol.decode_control(frame) == orjson.loads(event)
    other = run_event(
        {"state": "error"}, run_id="r0", client_id="c", name="N", role="student", at_ms=1
    )
    entries = [b"old\x00" + other, b"s1\x00" + event]
    runs = recent_runs(entries, "s1")
    assert runs is not None
    assert protocol.decode_control(runs) == {"type": "runs", "runs": [orjson.loads(event)["run"]]}
    assert recent_runs(entries[:1], "s1") is None
    assert recent_runs([], "s1") is None
    assert RUNS_KEPT >= 30  # a class's latest runs fit
