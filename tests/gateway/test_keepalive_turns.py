"""The keepalive's pacing (pure): a round of sockets is pinged a few per turn, and the
round always ends within the interval, whatever the number of sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.keepalive import TURN_SECONDS, per_turn


@given(
    sockets=st.integers(min_value=0, max_value=200_000),
    interval=st.floats(min_value=0.001, max_value=600),
)
def test_a_round_ends_within_the_interval(sockets: int, interval: float) -> None:
    turn = min(TURN_SECONDS, interval)
    share = per_turn(sockets, interval, turn)
    assert share >= 1
    turns_needed = -(-sockets // share)
    assert turns_needed * turn <= interval + 1e-9


def test_the_work_per_turn_is_spread_not_a_burst() -> None:
    # 5,000 sockets pinged every 3 s: a few dozen per turn, not a third of them at once.
    assert per_turn(5000, 3.0) == 34
    assert per_turn(1000, 3.0) == 7
    assert per_turn(3, 3.0) == 1
    assert per_turn(5000, 30.0) == 4
