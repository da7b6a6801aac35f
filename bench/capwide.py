"""capacity-wide: the highest delivery rate each target sustains (issue #13).

The wide scenario's shape (rooms of 1 mentor + 4 students, 1 edit/s/student) at growing
sizes (`CAPWIDE_ROOMS`, default 200 400 800 1200), for every target, with the servers on
one core and on two (`CAPWIDE_PINS`, default "0:1 -": servers + Redis on core 0 and the
load generator on core 1, then nothing pinned). A target's steps stop at the first one
that breaks (p99 above `CAPWIDE_P99_MS`, default 50, any delivery lost, a client not
connected, or no result): its capacity is the delivery rate of the last step that held.

y-websocket-protocol targets (coderoom, ywebsocket) use the load generator's `yws-raw`
clients: the stock WebsocketProvider applies every remote update and saturates the load
generator's core near 400 rooms, which would measure the clients, not the servers
(docs/bench/tail.md). Socket.IO's and Hocuspocus's clients are their own.

Writes capwide.md, capwide.json and capwide.png next to the other results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import _get, fmt, row, table
from bench.scenarios import Scenario

JSON = dict[str, Any]
RAW_ADAPTER = "yws-raw"


@dataclass(frozen=True, slots=True)
class Plan:
    rooms: tuple[int, ...]
    pins: tuple[str, ...]  # taskset PIN values; "-" = not pinned
    p99_ms: float
    warmup: float
    duration: float

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str], quick: bool) -> Plan:
        rooms = tuple(int(x) for x in env.get("CAPWIDE_ROOMS", "200 400 800 1200").split())
        pins = tuple(env.get("CAPWIDE_PINS", "0:1 -").split())
        p99 = float(env.get("CAPWIDE_P99_MS", "50"))
        return cls(rooms, pins, p99, 2 if quick else 5, 6 if quick else 20)

    def step(self, rooms: int) -> Scenario:
        return Scenario(f"capwide{rooms}", rooms, 4, 0, 1, self.warmup, self.duration)


def held(r: JSON, p99_limit_ms: float) -> tuple[bool, str]:
    """Did the target sustain this step (a row of bench.report.row), and if not, why."""
    if r["failed"]:
        return False, "no result"
    if (r["connected"] or 0) < (r["clients"] or 0):
        return False, f"{(r['clients'] or 0) - (r['connected'] or 0)} not connected"
    if r["lost"]:
        return False, f"{r['lost']} lost"
    if r["p99"] is None:
        return False, "no latency"
    if r["p99"] > p99_limit_ms:
        return False, f"p99 {r['p99']:g} ms > {p99_limit_ms:g}"
    return True, ""


def condense(result: JSON, target: str, pin: str, rooms: int, limit: float) -> JSON:
    r = row(result)
    ok, why = held(r, limit)
    return {
        "target": target,
        "pin": pin,
        "rooms": rooms,
        "clients": r["connected"],
        "deliveries_per_s": r["deliv_s"],
        "p50": r["p50"],
        "p99": r["p99"],
        "lost": r["lost"],
        "server_cpu_pct": r["srv_cpu_pct"],
        "fleet_ms_1k": r["fleet_ms_1k"],
        "loadgen_cpu_pct": r["loadgen_cpu_pct"],
        "other_cpu_pct": r["other_cpu_pct"],
        "adapter": _get(result, "meta.adapter") or "",
        "held": ok,
        "why": why,
    }


def run(
    plan: Plan,
    targets: Sequence[str],
    one_step: Callable[[str, str, Scenario], JSON],
    say: Callable[[str], None],
) -> list[JSON]:
    """Every pin, every target, growing steps until one breaks. ``one_step(target, pin,
    scenario)`` starts the target fresh, runs the load generator and returns its JSON."""
    rows: list[JSON] = []
    for pin in plan.pins:
        for target in targets:
            for rooms in plan.rooms:
                result = one_step(target, pin, plan.step(rooms))
                row = condense(result, target, pin, rooms, plan.p99_ms)
                rows.append(row)
                if not row["held"]:
                    say(f"   {target} pin {pin}: step {rooms} rooms broke ({row['why']})")
                    break
    return rows


def capacities(rows: Sequence[JSON]) -> dict[tuple[str, str], JSON | None]:
    """(target, pin) -> the highest step that held (None: not even the first)."""
    best: dict[tuple[str, str], JSON | None] = {}
    for r in rows:
        key = (r["target"], r["pin"])
        best.setdefault(key, None)
        if r["held"]:
            current = best[key]
            if current is None or r["deliveries_per_s"] > current["deliveries_per_s"]:
                best[key] = r
    return best


def _pin_name(pin: str) -> str:
    return "servers on 1 core (PIN=0:1)" if pin != "-" else "servers on 2 cores (not pinned)"


def markdown(rows: Sequence[JSON], plan: Plan, machine_line: str, date: str) -> str:
    best = capacities(rows)
    summary = []
    for (target, pin), r in best.items():
        summary.append(
            [
                target,
                _pin_name(pin),
                fmt(r["deliveries_per_s"], 0) if r else "below the first step",
                str(r["rooms"]) if r else "–",
                fmt(r["p99"]) if r else "–",
                next((x["adapter"] or "" for x in rows if x["target"] == target), ""),
            ]
        )
    steps = [
        [
            r["target"],
            _pin_name(r["pin"]),
            str(r["rooms"]),
            str(r["clients"]),
            fmt(r["deliveries_per_s"], 0),
            fmt(r["p50"]),
            fmt(r["p99"]),
            str(r["lost"]),
            fmt(r["server_cpu_pct"], 0),
            fmt(r["fleet_ms_1k"], 0),
            fmt(r["loadgen_cpu_pct"], 0),
            fmt(r["other_cpu_pct"], 0),
            "held" if r["held"] else f"broke: {r['why']}",
        ]
        for r in rows
    ]
    return "\n".join(
        [
            f"# capacity-wide ({date})",
            "",
            f"Machine: {machine_line}",
            "",
            f"Rooms of 1 mentor + 4 students, 1 edit/s/student, {plan.warmup:g} s warm-up + "
            f"{plan.duration:g} s measured per step; a step holds with p99 ≤ {plan.p99_ms:g} ms, "
            "no delivery lost and every client connected; a target stops at its first "
            "broken step. Each target is started fresh for every step (bench/capwide.py).",
            "",
            "## Highest sustained delivery rate",
            "",
            table(["target", "servers", "deliveries/s", "at rooms", "p99 ms", "clients"], summary),
            "",
            "## Every step",
            "",
            table(
                [
                    "target",
                    "servers",
                    "rooms",
                    "clients",
                    "deliv/s",
                    "p50 ms",
                    "p99 ms",
                    "lost",
                    "srv CPU %",
                    "fleet CPU ms/1k",
                    "loadgen CPU %",
                    "other CPU %",
                    "",
                ],
                steps,
            ),
            "",
            "![deliveries/s vs p99 per target](capwide.png)",
            "",
        ]
    )


def plot(rows: Sequence[JSON], path: Path, limit: float) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (target, pin), _ in capacities(rows).items():
        pts = [r for r in rows if r["target"] == target and r["pin"] == pin and r["p99"]]
        if not pts:
            continue
        style = "-" if pin != "-" else "--"
        ax.plot(
            [r["deliveries_per_s"] for r in pts],
            [r["p99"] for r in pts],
            style,
            marker="o",
            label=f"{target} ({'1 core' if pin != '-' else '2 cores'})",
        )
    ax.axhline(limit, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("deliveries per second")
    ax.set_ylabel("p99 edit → delivery (ms, log)")
    ax.set_title("capacity-wide: p99 as the load grows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(
    out_dir: Path, rows: Sequence[JSON], plan: Plan, machine_line: str, date: str
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "capwide.md"
    md.write_text(markdown(rows, plan, machine_line, date))
    js = out_dir / "capwide.json"
    plan_json = {
        "rooms": plan.rooms,
        "pins": plan.pins,
        "p99_ms": plan.p99_ms,
        "warmup": plan.warmup,
        "duration": plan.duration,
    }
    js.write_text(json.dumps({"date": date, "plan": plan_json, "rows": list(rows)}, indent=1))
    png = plot(rows, out_dir / "capwide.png", plan.p99_ms)
    return [md, js, *([png] if png else [])]
