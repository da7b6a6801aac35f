"""services/gateway/awareness.py: the room's awareness table on its own (the room core's
use of it, with members, is in test_room.py)."""

from __future__ import annotations

import pytest

from services.gateway.awareness import (
    MAX_AWARENESS_CLIENTS_PER_MEMBER,
    AwarenessRefused,
    AwarenessTable,
)
from shared.yvalidate import InvalidUpdate
from shared.ywire import encode_awareness_update, parse_awareness_update


@pytest.mark.parametrize(
    ("clock", "state", "newer"),
    [
        (4, '{"a":1}', True),  # a higher clock
        (3, '{"a":2}', False),  # the same clock, a new state: an echo or a replay
        (3, "null", True),  # the removal of a live state at the same clock
        (2, '{"a":0}', False),  # an older clock
    ],
)
def test_the_newer_rule(clock: int, state: str, newer: bool) -> None:
    table = AwarenessTable()
    table.remember(7, 3, '{"a":1}')
    assert table.is_newer(7, clock, state) is newer
    assert table.is_newer(8, 0, "{}")  # an id never seen


def test_a_removal_is_the_next_clock_and_the_id_stays_known() -> None:
    table = AwarenessTable()
    table.remember(7, 3, '{"a":1}')
    table.remember(9, 1, '{"b":1}')
    assert parse_awareness_update(table.remove([7])) == [(7, 4, "null")]
    assert table.states == {9: (1, '{"b":1}')} and table.clocks[7] == 4
    assert not table.is_newer(7, 4, "null")  # removed already
    assert table.update_of([7, 9]) == encode_awareness_update([(9, 1, '{"b":1}')])
    assert table.update_of([7]) is None


def test_remote_awareness_takes_only_what_is_new() -> None:
    table = AwarenessTable()
    table.remember(7, 3, '{"a":1}')
    update = encode_awareness_update([(7, 3, '{"a":1}'), (8, 1, '{"c":1}')])
    assert table.merge_remote(update, "sx") == ([(8, 1, '{"c":1}')], False)
    assert table.owners == {8: "sx"}
    assert table.merge_remote(update, "sx") == ([], False)
    assert table.merge_remote(b"\xff\xff", "sx") is None


def test_a_refused_update_changes_nothing() -> None:
    table = AwarenessTable()
    first = encode_awareness_update([(1, 1, '{"me":1}')])
    accepted = table.accept("sme", set(), first)
    assert (accepted.fresh, accepted.new_ids, accepted.whole) == ([(1, 1, '{"me":1}')], {1}, True)
    table.owners[2], table.clocks[2], table.states[2] = "sother", 1, (1, "{}")
    before = (dict(table.states), dict(table.clocks), dict(table.owners))
    too_many = [(c, 1, "{}") for c in range(10, 10 + MAX_AWARENESS_CLIENTS_PER_MEMBER)]
    for entries, reason in [
        ([(3, 1, '{"ok":1}'), (2, 2, '{"x":1}')], "awareness id of another member"),
        ([(3, 1, "not json")], "awareness is not JSON"),
        (too_many, "too many awareness ids"),
    ]:
        with pytest.raises(AwarenessRefused, match=reason):
            table.accept("sme", {1}, encode_awareness_update(entries))
        assert (table.states, table.clocks, table.owners) == before
    with pytest.raises(InvalidUpdate):
        table.accept("sme", {1}, b"\x05")
    # Another member's id at the same clock (a stock client timing a silent peer out) is
    # dropped, not refused; an id the room saw removed later is answered with its removal.
    table.remember(4, 5, "null")
    same = table.accept("sme", {1}, encode_awareness_update([(2, 1, "null"), (4, 2, "{}")]))
    assert (same.fresh, same.stale, same.new_ids) == ([], [(4, 5, "null")], set())
