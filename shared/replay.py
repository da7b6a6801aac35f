"""Session replay: from a closed room's history to the bounded record the archive keeps.

Pure functions (no I/O). The gateway's closing path calls `build_replay`; the api's
replay route calls `decode_replay`. Design, the bound and the failure cases:
docs/replay.md.
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pycrdt import Decoder, Doc, Text, get_state, merge_updates

log = logging.getLogger(__name__)

FORMAT = 1
WINDOWS_MS = (250, 1_000, 5_000, 15_000, 60_000, 300_000)
UPDATE_KINDS = frozenset("our")  # entries whose data is a Yjs update
EVENT_KINDS = frozenset("jlsch")  # join, leave, solved, chat, hint: never thinned
ROLES = {"m": "mentor", "s": "student", "w": "watcher"}
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a room's history stream."""

    at_ms: int  # the Redis clock when it was appended (the stream id's first part)
    kind: str  # o, u, j, l, s, r, c, h
    author: str  # '<role letter><client id>[\t<name>]', several separated by '\n'
    data: bytes


@dataclass(frozen=True, slots=True)
class Step:
    t: int  # ms since the session opened
    kind: str
    authors: tuple[int, ...]
    data: bytes | str | None  # a Yjs update (o, u, r, x), a text (c, h), or nothing


class _Authors:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.rows: list[Json] = []

    def of(self, tags: str) -> tuple[int, ...]:
        out: list[int] = []
        for tag in tags.split("\n"):
            if len(tag) < 2 or tag[0] not in ROLES:
                continue
            who, _, name = tag.partition("\t")
            i = self.index.get(who)
            if i is None:
                i = self.index[who] = len(self.rows)
                self.rows.append({"id": who[1:], "role": ROLES[who[0]], "name": ""})
            if name:
                self.rows[i]["name"] = name
            if i not in out:
                out.append(i)
        return tuple(out)


def steps_of(history: Sequence[HistoryEntry], started_at_ms: int) -> tuple[list[Step], list[Json]]:
    """The history as steps (times relative to the start) and the list of authors."""
    authors = _Authors()
    steps: list[Step] = []
    for entry in history:
        # The template is what the room had from its first moment (the Redis clock that
        # stamped it may run a millisecond behind or ahead of the gateway's).
        t = 0 if entry.kind == "o" else max(0, entry.at_ms - started_at_ms)
        if entry.kind in UPDATE_KINDS:
            if not entry.data:
                continue
            steps.append(Step(t, entry.kind, authors.of(entry.author), entry.data))
        elif entry.kind in EVENT_KINDS:
            text = entry.data.decode(errors="replace") if entry.kind in "ch" else None
            steps.append(Step(t, entry.kind, authors.of(entry.author), text))
        else:
            log.warning("history entry of unknown kind %r skipped", entry.kind)
    return steps, authors.rows


def yjs_clients(update: bytes) -> list[int]:
    """The Yjs client ids whose items an update carries (from its state vector)."""
    decoder = Decoder(get_state(update))
    out = []
    for _ in range(decoder.read_var_uint()):
        out.append(decoder.read_var_uint())
        decoder.read_var_uint()
    return out


def client_authors(steps: Sequence[Step]) -> dict[int, int]:
    """Yjs client id -> author index, learnt from the updates that have one author
    (the colours of the replay: every character carries the client id that typed it)."""
    out: dict[int, int] = {}
    for step in steps:
        if step.kind == "u" and len(step.authors) == 1 and isinstance(step.data, bytes):
            for client in yjs_clients(step.data):
                out.setdefault(client, step.authors[0])
    return out


def coarsen(steps: Sequence[Step], window_ms: float) -> list[Step]:
    """Merge runs of consecutive updates spanning at most window_ms (events end a run).

    A merged step holds the union of a prefix of the history, so every state it leads to
    is one the room had; it carries the time of the run's last update and its authors."""
    out: list[Step] = []
    run: list[Step] = []

    def flush() -> None:
        if not run:
            return
        if len(run) == 1:
            out.append(run[0])
        else:
            data = merge_updates(*(bytes(s.data) for s in run if isinstance(s.data, bytes)))
            authors = tuple(dict.fromkeys(a for s in run for a in s.authors))
            out.append(Step(run[-1].t, "u", authors, data))
        run.clear()

    for step in steps:
        if step.kind == "u" and run:
            if step.t - run[0].t <= window_ms:
                run.append(step)
                continue
        flush()
        if step.kind == "u":
            run.append(step)
        else:
            out.append(step)
    flush()
    return out


def replayed_doc(steps: Sequence[Step]) -> Doc[Text]:
    doc: Doc[Text] = Doc()
    for step in steps:
        if isinstance(step.data, bytes):
            doc.apply_update(step.data)
    return doc


def _encode(
    steps: Sequence[Step], authors: list[Json], clients: dict[int, int], bound: Json
) -> bytes:
    rows = [
        [
            s.t,
            s.kind,
            list(s.authors),
            base64.b64encode(s.data).decode() if isinstance(s.data, bytes) else s.data,
        ]
        for s in steps
    ]
    payload = {
        "v": FORMAT,
        "authors": authors,
        "clients": {str(c): a for c, a in clients.items()},
        "steps": rows,
        "bound": bound,
    }
    return zlib.compress(orjson.dumps(payload), 9)


def build_replay(
    history: Sequence[HistoryEntry],
    *,
    started_at_ms: int,
    final_state: bytes,
    max_bytes: int,
    history_cut: bool = False,
) -> bytes | None:
    """The compressed replay of a session, at most ``max_bytes``; None if even the
    coarsest form does not fit. ``final_state`` is the document the room closed with
    (a Yjs update): the replay always ends on exactly that text."""
    steps, authors = steps_of(history, started_at_ms)
    clients = client_authors(steps)
    final: Doc[Text] = Doc()
    if final_state:
        final.apply_update(final_state)
    end = max((s.t for s in steps), default=0)
    # Merging is lossless, so every coarsened form ends where the full one does: the
    # missing difference (if any) is computed once and appended to each candidate.
    replayed = replayed_doc(steps)
    jump: list[Step] = []
    if str(replayed.get("code", type=Text)) != str(final.get("code", type=Text)):
        jump = [Step(end, "x", (), final.get_update(replayed.get_state()))]
    raw_updates = sum(1 for s in steps if s.kind == "u")
    raw_size = 0
    for window in (0, *WINDOWS_MS, float("inf"), None):
        if window is None:  # the last resort: only the events, then the final text
            kept = [s for s in steps if s.kind not in ("u", "r")]
            kept.append(Step(end, "x", (), final.get_update(replayed_doc(kept).get_state())))
        else:
            kept = (coarsen(steps, window) if window else list(steps)) + jump
        bound = {
            "windowMs": None if window is None else (-1 if window == float("inf") else window),
            "rawUpdates": raw_updates,
            "keptUpdates": sum(1 for s in kept if s.kind == "u"),
            "rawBytes": raw_size,
            "historyCut": history_cut,
        }
        blob = _encode(kept, authors, clients, bound)
        if window == 0:
            raw_size = bound["rawBytes"] = len(blob)
        if len(blob) <= max_bytes:
            return blob if window != 0 else _encode(kept, authors, clients, bound)
    return None


def decode_replay(blob: bytes) -> Json:
    """The stored replay as JSON (raises ValueError on anything we did not write)."""
    try:
        data = orjson.loads(zlib.decompress(blob))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a replay: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        raise ValueError("unknown replay format")
    return data
