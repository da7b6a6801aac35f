"""Replay figures (docs/replay.md): `uv run python -m bench.replay [MINUTES]`.

1. Archive size per minute of a busy session: 5 students typing at once (about 2.5
   keystrokes a second each, in bursts, 15 % deletions), before and after the bound.
2. Time to open a 30-minute replay and to seek (to its middle, and anywhere: p50/p95)
   in headless Chromium, against a real api process (embedded MongoDB, redis-server)
   serving the page; the machine's load average with it.
Prints a Markdown table; timing is measured, never asserted.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from shared.replay import HistoryEntry, build_replay, decode_replay
from shared.settings import Settings

START = 1_767_225_600_000
STUDENTS = 5


def busy_session(minutes: float, seed: int = 7) -> tuple[list[HistoryEntry], bytes]:
    """The history of a room where STUDENTS type at once, and its final state."""
    rng = random.Random(seed)
    docs: list[Doc[Text]] = []
    template: Doc[Text] = Doc()
    template["code"] = tpl = Text()
    tpl += "// exercise\n" + "".join(f"// student {i}\n\n" for i in range(STUDENTS))
    history = [HistoryEntry(START, "o", "", template.get_update())]
    captured: list[bytes] = []
    for i in range(STUDENTS):
        d: Doc[Text] = Doc()
        d.apply_update(template.get_update())
        # What a browser sends: each transaction's own update (not a diff carrying the
        # whole delete set, which is what get_update(state) would give).
        d.observe(lambda event: captured.append(event.update))
        docs.append(d)
        history.append(HistoryEntry(START + 100 + i, "j", f"sclient{i}\tStudent {i}", b""))
    words = "const let return if else for while function => ( ) { } ; = + - * x y n i sum".split()
    events: list[tuple[float, int]] = []
    for i in range(STUDENTS):
        t = 1000.0 + rng.random() * 2000
        while t < minutes * 60_000:
            for _ in range(rng.randrange(5, 40)):  # a burst of typing
                t += rng.expovariate(1 / 180)
                events.append((t, i))
            t += rng.expovariate(1 / 6000)  # thinking
    events.sort()
    pending: list[str] = [""] * STUDENTS
    for t, i in events:
        d = docs[i]
        text = d.get("code", type=Text)
        marker = str(text).find(f"// student {i}\n")
        line_end = str(text).find("\n// student", marker + 5)
        end = line_end if line_end >= 0 else len(text)
        captured.clear()
        if rng.random() < 0.15 and end - marker > 20:
            del text[end - 1 : end]
        else:
            if not pending[i]:
                pending[i] = rng.choice(words) + rng.choice([" ", " ", "\n  "])
            text.insert(end, pending[i][0])
            pending[i] = pending[i][1:]
        (update,) = captured
        captured.clear()
        for j, other in enumerate(docs):
            if j != i:
                other.apply_update(update)
        history.append(HistoryEntry(START + int(t), "u", f"sclient{i}\tStudent {i}", update))
    end_ms = START + int(minutes * 60_000)
    history += [HistoryEntry(end_ms, "l", f"sclient{i}", b"") for i in range(STUDENTS)]
    return history, docs[0].get_update()


def sizes(minutes: float) -> tuple[dict[str, Any], bytes]:
    history, final = busy_session(minutes)
    raw = sum(len(e.data) + len(e.author) + 30 for e in history)  # ~ what Redis holds
    started = time.perf_counter()
    full = build_replay(history, started_at_ms=START, final_state=final, max_bytes=1 << 30)
    full_s = time.perf_counter() - started
    limit = Settings.model_fields["replay_max_bytes"].default
    started = time.perf_counter()
    bounded = build_replay(history, started_at_ms=START, final_state=final, max_bytes=limit)
    bounded_s = time.perf_counter() - started
    assert full is not None and bounded is not None
    bound = decode_replay(bounded)["bound"]
    return {
        "updates": sum(1 for e in history if e.kind == "u"),
        "raw_per_min": raw / minutes,
        "full_per_min": len(full) / minutes,
        "bounded_per_min": len(bounded) / minutes,
        "bounded_total": len(bounded),
        "window_ms": bound["windowMs"],
        "kept": bound["keptUpdates"],
        "build_full_s": full_s,
        "build_bounded_s": bounded_s,
    }, bounded


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


SEEK = """async (t) => {
  const s = document.querySelector('#scrub');
  const t0 = performance.now();
  s.value = String(t);
  s.dispatchEvent(new Event('input'));
  const handled = performance.now() - t0;
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return [handled, performance.now() - t0];
}"""


def browser_times(blob: bytes, minutes: float, seeks: int = 40) -> dict[str, float]:
    """Open the page 3 times (median); then `seeks` seeks, alternately to the middle and
    to random moments: the input handler's time (seek, text and colours into the
    editor) and the time until the next frame has been drawn."""
    import pymongo
    from playwright.sync_api import sync_playwright

    from tests.infra import EmbeddedMongo, Fleet, RedisServer, find_chromium
    from tests.web.browser import CHROMIUM_ARGS

    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis").start()
        mongo = EmbeddedMongo(Path(tmp) / "mongo").start()
        try:
            with Fleet(Path(tmp), gateways=0, redis=redis, mongo=mongo) as fleet:
                session_id = uuid.uuid4().hex[:24]
                client: Any = pymongo.MongoClient(fleet.env["MONGODB_URL"])
                client[fleet.env["MONGODB_DB"]]["room_sessions"].insert_one(
                    {
                        "block_id": "0" * 24,
                        "session_id": session_id,
                        "final_code": "",
                        "solved": False,
                        "peak_students": STUDENTS,
                        "reason": "bench",
                        "replay": blob,
                        "replay_bytes": len(blob),
                    }
                )
                client.close()
                assert fleet.api is not None
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(
                        executable_path=find_chromium(), args=CHROMIUM_ARGS
                    )
                    page = browser.new_context(base_url=fleet.api.url).new_page()
                    page.goto("/admin")
                    page.evaluate(
                        "(t) => sessionStorage.setItem('coderoom.adminToken', t)", Fleet.ADMIN_TOKEN
                    )
                    opens, in_page = [], []
                    for _ in range(3):
                        started = time.perf_counter()
                        page.goto(f"/admin/replay/{session_id}")
                        page.wait_for_selector("#replay-ready", state="attached", timeout=300_000)
                        opens.append((time.perf_counter() - started) * 1000)
                        in_page.append(
                            float(page.get_attribute("#replay-ready", "data-open-ms") or 0)
                        )
                    duration = int(page.get_attribute("#scrub", "max") or 0)
                    handled, drawn, middle = [], [], []
                    for k in range(seeks):
                        target = duration // 2 if k % 2 == 0 else rng.randrange(duration + 1)
                        if k % 2 == 0:
                            page.evaluate(SEEK, 0)  # come to the middle from the start
                        h, d = page.evaluate(SEEK, target)
                        handled.append(h)
                        drawn.append(d)
                        if k % 2 == 0:
                            middle.append(d)
                    browser.close()
                    return {
                        "open_ms": statistics.median(opens),
                        "open_in_page_ms": statistics.median(in_page),
                        "seek_middle_ms": statistics.median(middle),
                        "seek_p50_ms": _pct(drawn, 0.5),
                        "seek_p95_ms": _pct(drawn, 0.95),
                        "seek_max_ms": max(drawn),
                        "handler_p50_ms": _pct(handled, 0.5),
                        "handler_p95_ms": _pct(handled, 0.95),
                        "seeks": seeks,
                    }
        finally:
            mongo.stop()
            redis.stop()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    figures, bounded = sizes(minutes)
    timing = browser_times(bounded, minutes)
    say(f"| busy session: {STUDENTS} students, {minutes:g} min, {figures['updates']} updates |")
    say("|---|---|")
    say(f"| history in Redis (updates + tags) | {figures['raw_per_min'] / 1024:.1f} KiB/min |")
    say(f"| replay, every step (zlib) | {figures['full_per_min'] / 1024:.1f} KiB/min |")
    say(
        f"| replay after the bound (REPLAY_MAX_BYTES) | {figures['bounded_per_min'] / 1024:.1f} "
        f"KiB/min ({figures['bounded_total'] / 1024:.0f} KiB in all; window "
        f"{figures['window_ms']} ms, {figures['kept']} steps kept) |"
    )
    say(
        f"| building it at close (off the event loop) | every step {figures['build_full_s']:.1f} s;"
        f" bounded {figures['build_bounded_s']:.1f} s |"
    )
    load = os.getloadavg()
    say(
        f"| open the replay page (median of 3) | {timing['open_ms']:.0f} ms "
        f"(in the page, fetch to ready: {timing['open_in_page_ms']:.0f} ms) |"
    )
    say(
        f"| seek, to the next frame drawn ({timing['seeks']:g} seeks, half of them from the "
        f"start to the middle) | p50 {timing['seek_p50_ms']:.1f} ms, p95 "
        f"{timing['seek_p95_ms']:.1f} ms, worst {timing['seek_max_ms']:.1f} ms; to the middle "
        f"(median) {timing['seek_middle_ms']:.1f} ms |"
    )
    say(
        f"| seek, the input handler alone | p50 {timing['handler_p50_ms']:.1f} ms, "
        f"p95 {timing['handler_p95_ms']:.1f} ms |"
    )
    say(f"| machine load (1/5/15 min) at the end | {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} |")


if __name__ == "__main__":
    main()
