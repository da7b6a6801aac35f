"""Runs shared with the room (docs/protocol.md, "Runs").

A client runs code in its own browser and sends the result as a ``run-result`` control
message (type 100). The gateway checks it (size, shape, UTF-8, the sender's rate), adds
who sent it from the socket (client id, role, the display name of the socket's own
awareness state: never from the message), and publishes it on the room's channel
(``R``), keeping the room's last ``RUNS_KEPT`` runs for late joiners. Every gateway
serving the room sends it to its members as a ``run`` event. A run never touches the
document or the solved flag. Watchers' runs stay on their page: a watcher's
``run-result`` is checked like anyone's, then dropped.

The checks and the codec are pure; the budget, the script and the shell are the ones
chat uses too (``eventrelay.py``); ``RunRelay`` says only what is a run's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson

from services.gateway.channel import RUN_KIND
from services.gateway.eventrelay import (
    Decision,
    EventRelay,
    Incoming,
    Keeping,
    control_json,
    display_name,
    keep_and_publish,
    kept_entries,
)
from shared.keys import RoomKeys
from shared.protocol import CloseCode, MessageType, Role, control_frame

CONTROL_TAG: Final = bytes([MessageType.CONTROL])  # a client frame starting so is ours
MAX_RUN_FRAME: Final = 32 * 1024  # 4 KB of output, escaped as JSON, fits with room
OUTPUT_BYTES: Final = 4096
ERROR_BYTES: Final = 512
MAX_DURATION_MS: Final = 86_400_000
MAX_LINE: Final = 10_000_000
RUNS_KEPT: Final = 50
RUN_RATE: Final = 1.0  # runs relayed per second per member ...
RUN_BURST: Final = 5  # ... after a burst of this many
LANGUAGES: Final = frozenset({"javascript", "python"})
STATES: Final = frozenset({"ok", "error", "timeout", "stopped"})
_REQUIRED: Final = frozenset({"type", "language", "state", "durationMs", "output"})
_ALLOWED: Final = _REQUIRED | {"truncated", "error", "line"}


class RunRefused(ValueError):
    """A control message that is not a valid run result: the sender is closed with 4400."""


def _utf8_size(text: str) -> int:
    # A lone surrogate (JSON "\\ud800") cannot be encoded: it is not text.
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise RunRefused("run result is not valid UTF-8") from None


def _count(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def parse_run_result(frame: bytes) -> dict[str, Any]:
    """The fields of a client's ``run-result`` control frame, checked; RunRefused if not."""
    if len(frame) > MAX_RUN_FRAME:
        raise RunRefused("run result too large")
    message = control_json(frame, RunRefused)
    if not isinstance(message, dict):
        raise RunRefused("control message is not an object")
    if message.get("type") != "run-result":
        raise RunRefused("unknown control message from a client")
    keys = message.keys()
    if not _REQUIRED <= keys or not keys <= _ALLOWED:
        raise RunRefused("run result fields are wrong")
    language, state, output = message["language"], message["state"], message["output"]
    error, line = message.get("error"), message.get("line")
    truncated = message.get("truncated", False)
    if language not in LANGUAGES or state not in STATES:
        raise RunRefused("run result language or state unknown")
    if not _count(message["durationMs"], 0, MAX_DURATION_MS):
        raise RunRefused("run result duration out of range")
    if not isinstance(output, str) or _utf8_size(output) > OUTPUT_BYTES:
        raise RunRefused("run result output is not text of at most 4 KB")
    if error is not None and (not isinstance(error, str) or _utf8_size(error) > ERROR_BYTES):
        raise RunRefused("run result error is not text of at most 512 bytes")
    if line is not None and not _count(line, 1, MAX_LINE):
        raise RunRefused("run result line out of range")
    if type(truncated) is not bool:
        raise RunRefused("run result truncated is not a boolean")
    return {
        "language": language,
        "state": state,
        "durationMs": message["durationMs"],
        "output": output,
        "truncated": truncated,
        "error": error,
        "line": line,
    }


def run_event(
    result: dict[str, Any], *, run_id: str, client_id: str, name: str, role: Role, at_ms: int
) -> bytes:
    """The JSON of the ``run`` event every member gets (also kept in the room's list)."""
    run = {"id": run_id, "clientId": client_id, "name": name, "role": role, **result, "at": at_ms}
    return orjson.dumps({"type": "run", "run": run})


def recent_runs(entries: Iterable[bytes], session: str) -> bytes | None:
    """The ``runs`` event for a joiner from the room's list (entries ``session\\0event``),
    keeping only the current session's; None when there are none."""
    runs = [event["run"] for event in kept_entries(entries, session)]
    if not runs:
        return None
    return control_frame(orjson.dumps({"type": "runs", "runs": runs}))


def decide(incoming: Incoming) -> Decision:
    """Check a client's ``run-result``; the run's id is ``incoming.event_id``."""
    try:
        result = parse_run_result(incoming.frame)
    except RunRefused as exc:
        return Decision(close=CloseCode.BAD_REQUEST, reason=str(exc)[:100])
    if incoming.allowed is None:
        return Decision(close=CloseCode.RATE_LIMITED, reason="too many run results")
    if incoming.role == "watcher" or not incoming.allowed:
        return Decision()
    event = run_event(
        result,
        run_id=incoming.event_id,
        client_id=incoming.client_id,
        name=display_name(incoming.awareness_states),
        role=incoming.role,
        at_ms=incoming.at_ms,
    )
    return Decision(event=event, keep="runs")


RUN_SCRIPT: Final = keep_and_publish(RUN_KIND)


class RunRelay(EventRelay):
    """Runs: kept in the room's ``runs`` list; a joiner gets them as one ``runs`` event."""

    what = "a run"
    script = RUN_SCRIPT
    rate = RUN_RATE
    burst = RUN_BURST

    def decide(self, incoming: Incoming) -> Decision:
        return decide(incoming)

    def keeping(self, keys: RoomKeys, decision: Decision) -> Keeping:
        return Keeping(keys.runs, RUNS_KEPT)

    def lists(self, keys: RoomKeys) -> Sequence[str]:
        return [keys.runs]

    def greeting(self, lists: list[list[bytes]], session: str) -> bytes | None:
        return recent_runs(lists[0], session)
