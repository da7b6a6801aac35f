"""When `coderoom run` restarts a service that died, and when it gives up: the rules,
pure (no processes, no clock of their own), so they are tested in microseconds."""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field

RESTART_LIMIT = 5  # deaths of one service within RESTART_WINDOW: a crash loop
RESTART_WINDOW = 60.0
BACKOFF_FIRST = 0.5  # seconds before the first restart; doubled for each recent death
BACKOFF_MAX = 8.0


def exit_reason(code: int) -> str:
    """How a child ended, in words ("killed by SIGKILL", "exit status 1")."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass
class Deaths:
    """The recent deaths of one service: how long to wait before its restart, and
    whether it is in a crash loop (`limit` deaths within `window` seconds)."""

    limit: int = RESTART_LIMIT
    window: float = RESTART_WINDOW
    first: float = BACKOFF_FIRST
    most: float = BACKOFF_MAX
    times: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> int:
        """Count a death at `now`; the number of deaths within the window."""
        self.times.append(now)
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        return len(self.times)

    @property
    def crash_loop(self) -> bool:
        return len(self.times) >= self.limit

    @property
    def backoff(self) -> float:
        """Seconds before the next start: `first`, doubled for each other recent death."""
        return min(self.most, self.first * 2.0 ** max(0, len(self.times) - 1))
