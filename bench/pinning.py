"""`PIN=SERVER_CPUS:LOADGEN_CPUS` (as ../shared/peers/bench.sh): servers on some cores,
the load generator on others, the same for every target (`taskset`, Linux only)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

_CPUS = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


@dataclass(frozen=True, slots=True)
class Pin:
    servers: str  # taskset cpu list, e.g. "0" or "0,2-3"
    loadgen: str

    def loadgen_argv(self, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", self.loadgen, *argv]

    def pin_servers(self, pids: Sequence[int]) -> list[int]:
        """Pins every thread of each pid (and of its children); returns those it could not."""
        failed = []
        for pid in pids:
            for p in [pid, *_children(pid)]:
                done = subprocess.run(
                    ["taskset", "-apc", self.servers, str(p)], capture_output=True, check=False
                )
                if done.returncode:
                    failed.append(p)
        return failed


def parse_pin(value: str | None) -> Pin | None:
    """None when unset; ValueError naming PIN when malformed."""
    if not value:
        return None
    servers, sep, loadgen = value.partition(":")
    if not sep or not _CPUS.match(servers) or not _CPUS.match(loadgen):
        raise ValueError(f"PIN must be SERVER_CPUS:LOADGEN_CPUS (e.g. 0:1), not {value!r}")
    return Pin(servers, loadgen)


def from_env() -> Pin | None:
    return parse_pin(os.environ.get("PIN"))


def _children(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    kids = [int(x) for x in done.stdout.split()]
    return kids + [g for k in kids for g in _children(k)]
