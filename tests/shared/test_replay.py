"""The replay builder: every state it shows is one the room had, it ends on the final
code exactly, and it stays under its bound by dropping only the finest steps."""

from __future__ import annotations

import base64
import random
from typing import Any

from pycrdt import Doc, Text

from shared.replay import (
    HistoryEntry,
    build_replay,
    client_authors,
    coarsen,
    decode_replay,
    steps_of,
    yjs_clients,
)

START = 1_700_000_000_000


def _typed_session(
    students: int, keystrokes: int, seed: int = 1, gap_ms: int = 40
) -> tuple[list[HistoryEntry], list[tuple[int, str]], Doc[Text]]:
    """A room: the template, then students typing in turn (each its own Yjs client).
    Returns the history, the text the room had after each entry (time, text), the room."""
    rng = random.Random(seed)
    room: Doc[Text] = Doc()
    room["code"] = text = Text()
    with room.transaction():
        text += "// start\n"
    history = [HistoryEntry(START, "o", "", room.get_update())]
    seen = [(0, str(text))]
    docs = []
    for i in range(students):
        d: Doc[Text] = Doc()
        d.apply_update(room.get_update())
        docs.append(d)
        history.append(HistoryEntry(START + 1, "j", f"sstudent{i}\tStudent {i}", b""))
    t = START + 10
    for _ in range(keystrokes):
        i = rng.randrange(students)
        d = docs[i]
        d.apply_update(room.get_update(d.get_state()))
        before = d.get_state()
        mine = d.get("code", type=Text)
        if len(mine) > 5 and rng.random() < 0.2:
            at = rng.randrange(len(mine) - 1)
            del mine[at : at + 1]
        else:
            mine.insert(rng.randrange(len(mine) + 1), rng.choice("abcxyz(){};\n "))
        update = d.get_update(before)
        room.apply_update(update)
        t += rng.randrange(1, gap_ms)
        history.append(HistoryEntry(t, "u", f"sstudent{i}\tStudent {i}", update))
        seen.append((t - START, str(room.get("code", type=Text))))
    history.append(HistoryEntry(t + 5, "s", "", b""))
    return history, seen, room


def _texts(replay: dict[str, Any]) -> list[tuple[int, str]]:
    doc: Doc[Text] = Doc()
    out = []
    for t, kind, _, data in replay["steps"]:
        if kind in "ourx" and data:
            doc.apply_update(base64.b64decode(data))
            out.append((t, str(doc.get("code", type=Text))))
    return out


def test_full_history_replays_every_state_and_ends_exactly() -> None:
    history, seen, room = _typed_session(3, 300)
    blob = build_replay(
        history, started_at_ms=START, final_state=room.get_update(), max_bytes=1 << 20
    )
    assert blob is not None
    replay = decode_replay(blob)
    assert [a["name"] for a in replay["authors"]] == ["Student 0", "Student 1", "Student 2"]
    assert [a["role"] for a in replay["authors"]] == ["student"] * 3
    assert replay["bound"]["windowMs"] == 0
    assert _texts(replay) == seen
    kinds = [s[1] for s in replay["steps"]]
    assert kinds.count("j") == 3 and kinds[-1] == "s" and "x" not in kinds


def test_over_the_bound_coarsens_but_shows_only_real_states() -> None:
    history, seen, room = _typed_session(5, 3000, gap_ms=400)
    full = build_replay(
        history, started_at_ms=START, final_state=room.get_update(), max_bytes=1 << 22
    )
    assert full is not None
    bound = len(full) // 3
    blob = build_replay(
        history, started_at_ms=START, final_state=room.get_update(), max_bytes=bound
    )
    assert blob is not None and len(blob) <= bound
    replay = decode_replay(blob)
    assert replay["bound"]["windowMs"] > 0
    assert replay["bound"]["keptUpdates"] < replay["bound"]["rawUpdates"] == 3000
    real = {text for _, text in seen}
    texts = _texts(replay)
    assert all(text in real for _, text in texts)
    assert texts[-1][1] == str(room.get("code", type=Text))
    times = [t for t, _ in texts]
    assert times == sorted(times)
    # Each step shows, at its time, the text the room had at that time.
    for t, text in texts[1:]:
        assert text == [room_text for at, room_text in seen if at <= t][-1]


def test_a_cut_history_ends_with_a_jump_to_the_final_code() -> None:
    history, _, room = _typed_session(2, 50)
    cut = history[:20]  # the Redis bound stopped recording updates here
    blob = build_replay(
        cut, started_at_ms=START, final_state=room.get_update(), max_bytes=1 << 20, history_cut=True
    )
    assert blob is not None
    replay = decode_replay(blob)
    assert replay["steps"][-1][1] == "x"
    assert replay["bound"]["historyCut"] is True
    assert _texts(replay)[-1][1] == str(room.get("code", type=Text))


def test_no_history_at_all_still_ends_on_the_final_code() -> None:
    room: Doc[Text] = Doc()
    room["code"] = text = Text()
    text += "final"
    blob = build_replay([], started_at_ms=START, final_state=room.get_update(), max_bytes=4096)
    assert blob is not None
    assert _texts(decode_replay(blob)) == [(0, "final")]


def test_coarsen_merges_runs_within_the_window_and_keeps_events() -> None:
    history, _, _ = _typed_session(2, 100)
    steps, _ = steps_of(history, START)
    merged = coarsen(steps, 500)
    updates = [s for s in merged if s.kind == "u"]
    assert 1 < len(updates) < 100
    assert {a for s in updates for a in s.authors} == {0, 1}
    assert [s for s in merged if s.kind != "u"] == [s for s in steps if s.kind != "u"]


def test_clients_map_each_yjs_client_to_its_author() -> None:
    history, _, _ = _typed_session(3, 60)
    steps, _ = steps_of(history, START)
    clients = client_authors(steps)
    for step in steps:
        if step.kind == "u":
            assert isinstance(step.data, bytes)
            assert {clients[c] for c in yjs_clients(step.data)} <= set(step.authors)
    assert sorted(set(clients.values())) == [0, 1, 2]


def test_garbage_is_not_a_replay() -> None:
    import pytest

    for blob in (b"", b"nope", __import__("zlib").compress(b"[1]")):
        with pytest.raises(ValueError):
            decode_replay(blob)
