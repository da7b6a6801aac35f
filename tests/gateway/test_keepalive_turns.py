"""The keepalive's pacing (pure): a round of sockets is pinged a few per turn, spread
evenly over the interval, and the round always ends within it."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.keepalive import LONGEST_PAUSE, TURN_SECONDS, pacing


@given(
    sockets=st.integers(min_value=0, max_value=200_000),
    interval=st.floats(min_value=0.001, max_value=600),
)
def test_a_round_is_spread_over_the_interval_and_ends_within_it(
    sockets: int, interval: float
) -> None:
    share, pause = pacing(sockets, interval)
    assert share >= 1
    turns = math.ceil(sockets / share)
    assert turns * pause <= interval * (1 + 1e-9)  # every socket once per interval
    assert pause >= min(TURN_SECONDS, interval) * (1 - 1e-9)  # never a busy loop
    assert pause <= max(LONGEST_PAUSE, interval / max(1, int(interval / LONGEST_PAUSE))) + 1e-9
    most = max(1, int(interval / TURN_SECONDS))
    if sockets >= most:  # many sockets: the shortest pause, as few per turn as it allows
        assert share == math.ceil(sockets / most)


def test_the_work_per_turn_is_a_few_sockets_not_a_burst() -> None:
    # 5,000 sockets pinged every 3 s: 34 per 20 ms turn, not a third of them at once.
    assert pacing(5000, 3.0) == (34, 0.02)
    assert pacing(1000, 3.0) == (7, 0.02)
    assert pacing(37, 3.0) == (1, 3.0 / 37)  # few sockets: one at a time, evenly
    assert pacing(0, 3.0) == (1, 0.25)
    assert pacing(5000, 30.0) == (4, 0.02)
