"""The scenario matrix: the peers' bench.sh scenarios, plus coderoom-only checks.

Traffic and idle scenarios are exactly those of ../shared/peers/bench.sh (same rooms,
clients, rates and windows), so that figures line up with the peers' README. QUICK
shortens the windows only (never the sizes), for smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MATRIX = ("small", "wide", "bigroom", "idle2000", "idle5000")
# Coderoom-only: idle connections held by ONE gateway (+ join probe), and Redis
# traffic when rooms are split across gateways.
EXTRAS = ("capacity", "split")
ALL = MATRIX + EXTRAS
# Only when named (SCENARIOS=capacity-wide): long, every target at growing sizes.
OPTIONAL = ("capacity-wide",)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    rooms: int
    students: int
    watchers: int
    rate: float  # edits per second per student; 0 = idle
    warmup: float
    duration: float

    @property
    def clients(self) -> int:
        return self.rooms * (1 + self.students + self.watchers)

    @property
    def idle(self) -> bool:
        return self.rate == 0

    def flags(self) -> list[str]:
        return [
            "--rooms", str(self.rooms),
            "--students", str(self.students),
            "--watchers", str(self.watchers),
            "--rate", f"{self.rate:g}",
            "--duration", f"{self.duration:g}",
            "--warmup", f"{self.warmup:g}",
        ]  # fmt: skip

    def budget_s(self, drain: float = 5, connect_timeout: float = 30) -> float:
        """Upper bound of one run's wall time, for the watchdog (connects: 50 in flight)."""
        connect = connect_timeout + self.clients * 0.03
        return self.warmup + self.duration + drain + connect + 30


_BASE = {
    "small": Scenario("small", 20, 4, 0, 2, 5, 20),
    "wide": Scenario("wide", 200, 4, 0, 1, 5, 20),
    "bigroom": Scenario("bigroom", 1, 50, 50, 0.5, 5, 20),
    "idle2000": Scenario("idle2000", 400, 4, 0, 0, 2, 10),
    "idle5000": Scenario("idle5000", 1000, 4, 0, 0, 2, 10),
}


def scenario(name: str, quick: bool = False) -> Scenario:
    base = _BASE[name]
    if not quick:
        return base
    return replace(base, warmup=1, duration=3) if base.idle else replace(base, warmup=2, duration=6)


def capacity_step(clients: int, hold: float) -> Scenario:
    """`clients` idle connections held for `hold` s: rooms of 1 mentor + 4 students, at
    most CAPACITY_ROOMS rooms (beyond 5,000 clients the rooms grow instead)."""
    rooms = min(clients // 5, CAPACITY_ROOMS)
    return Scenario(f"cap{clients}", rooms, clients // rooms - 1, 0, 0, 2, hold)


CAPACITY_ROOMS = 1000  # = idle5000's rooms: seeding more blocks is slow on the embedded MongoDB


def split_scenario(quick: bool) -> Scenario:
    """20 rooms of 5 on one gateway, traffic as in `small`."""
    return Scenario("split", 20, 4, 0, 2, 2, 4 if quick else 8)


def join_probe(joins: int) -> Scenario:
    """One room (the 2 KB block): a mentor then `joins - 1` clients, one after the other."""
    return Scenario("join", 1, joins - 1, 0, 0, 0, 1)


def parse_list(text: str | None, default: tuple[str, ...], known: tuple[str, ...]) -> list[str]:
    names = (text or "").replace(",", " ").split() or list(default)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario/target {unknown}; known: {' '.join(known)}")
    return names
