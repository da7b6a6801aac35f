"""capacity-wide's pure parts: when a step holds, where each target stops, the capacity."""

from __future__ import annotations

from typing import Any

from bench import capwide
from bench.scenarios import Scenario


def _result(
    p99: float | None, lost: int = 0, connected: int = 1000, per_s: float = 3200
) -> dict[str, Any]:
    return {
        "meta": {"clients": 1000, "adapter": "yws-raw"},
        "connect": {"ok": connected, "failed": 1000 - connected},
        "deliveries": {"lost": lost, "per_s": per_s, "observed": 64000},
        "latency_ms": {"p50": 1.0, "p99": p99},
    }


def _row(result: dict[str, Any]) -> dict[str, Any]:
    return capwide.condense(result, "coderoom", "0:1", 200, 50)


def test_a_step_holds_only_with_p99_under_the_limit_no_loss_and_everyone_connected() -> None:
    assert _row(_result(49.9))["held"]
    assert _row(_result(50.1))["why"] == "p99 50.1 ms > 50"
    assert _row(_result(10, lost=3))["why"] == "3 lost"
    assert _row(_result(10, connected=990))["why"] == "10 not connected"
    assert _row(_result(None))["why"] == "no latency"
    assert _row({"failed": True, "meta": {}})["why"] == "no result"


def test_each_target_stops_at_its_first_broken_step_and_capacity_is_the_last_held() -> None:
    plan = capwide.Plan((200, 400, 800, 1200), ("0:1", "-"), 50, 5, 20)
    p99 = {  # (target, pin, rooms) -> p99
        ("coderoom", "0:1", 200): 3, ("coderoom", "0:1", 400): 8, ("coderoom", "0:1", 800): 70,
        ("socketio", "0:1", 200): 4, ("socketio", "0:1", 400): 90,
        ("coderoom", "-", 200): 2, ("coderoom", "-", 400): 4, ("coderoom", "-", 800): 9,
        ("coderoom", "-", 1200): 30,
        ("socketio", "-", 200): 200,
    }  # fmt: skip
    ran: list[tuple[str, str, int]] = []

    def one_step(target: str, pin: str, scen: Scenario) -> dict[str, Any]:
        ran.append((target, pin, scen.rooms))
        assert (scen.students, scen.rate) == (4, 1)
        return _result(p99[(target, pin, scen.rooms)], per_s=16.0 * scen.rooms)

    rows = capwide.run(plan, ["coderoom", "socketio"], one_step, lambda _: None)
    assert ran == list(p99)  # nothing run past a broken step
    best = capwide.capacities(rows)
    rooms = {key: (r["rooms"] if r else None) for key, r in best.items()}
    assert rooms == {
        ("coderoom", "0:1"): 400,
        ("socketio", "0:1"): 200,
        ("coderoom", "-"): 1200,
        ("socketio", "-"): None,
    }
    text = capwide.markdown(rows, plan, "test machine", "now")
    assert "below the first step" in text and "| coderoom |" in text
