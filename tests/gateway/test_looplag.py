"""The event-loop lag monitor: the pure stall attribution, then a real loop that stalls."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import orjson

from services.gateway.looplag import (
    INTERVAL_SECONDS,
    GcPauses,
    LoopLagMonitor,
    StallReport,
    attribute,
    freeze_startup_heap,
)
from tests.infra import scaled

STALL = 2.5 * INTERVAL_SECONDS  # longer than the interval: a tick always falls due inside


def test_attribute_counts_only_samples_inside_the_stall() -> None:
    report = StallReport()
    samples = [
        (0.9, ("a.py:before",)),
        (1.0, ("hub.py:fan_out", "hub.py:on_frame")),
        (1.01, ("wire.py:encode", "hub.py:fan_out", "hub.py:on_frame")),
        (1.02, ()),  # an empty stack (the thread was between frames) counts nothing
        (1.5, ("a.py:after",)),
    ]
    attribute(report, 1.0, 1.02, samples)
    assert report.stalls == 1
    assert report.samples == 2
    assert abs(report.stalled_seconds - 0.02) < 1e-9
    assert report.innermost == {"hub.py:fan_out": 1, "wire.py:encode": 1}
    assert report.inclusive == {"hub.py:fan_out": 2, "hub.py:on_frame": 2, "wire.py:encode": 1}
    attribute(report, 2.0, 2.1, samples)  # a stall nothing was sampled in
    assert report.stalls == 2 and report.samples == 2
    assert abs(report.longest_seconds - 0.1) < 1e-9


def test_recursive_frames_count_once_per_sample() -> None:
    report = StallReport()
    attribute(report, 0, 1, [(0.5, ("m.py:walk", "m.py:walk", "m.py:walk"))])
    assert report.inclusive["m.py:walk"] == 1


def _deliberate_sleep_stall() -> None:
    time.sleep(STALL)  # releases the GIL: the sampler runs freely


def _deliberate_spin_stall() -> None:
    end = time.perf_counter() + STALL
    while time.perf_counter() < end:  # holds the GIL: the sampler gets in at switch points
        pass


def test_a_real_stall_is_measured_and_attributed(tmp_path: Path) -> None:
    lags: list[float] = []
    out = tmp_path / f"stalls-{os.getpid()}.json"  # "{pid}" in the setting: one file each

    async def main() -> None:
        monitor = LoopLagMonitor(lags.append, str(tmp_path / "stalls-{pid}.json"))
        monitor.start()
        await asyncio.sleep(scaled(INTERVAL_SECONDS * 3))
        quiet = len(lags)
        for stall in (_deliberate_sleep_stall, _deliberate_spin_stall):
            await asyncio.sleep(INTERVAL_SECONDS / 2)
            stall()
            await asyncio.sleep(INTERVAL_SECONDS * 1.5)
        monitor.stop()
        assert quiet >= 1

    asyncio.run(main())
    assert max(lags) >= STALL - INTERVAL_SECONDS, lags  # a tick fell due inside each stall
    report = orjson.loads(out.read_bytes())
    assert report["stalls"] >= 2
    assert len(report["timeline"]) == report["stalls"]  # when each began, how long
    assert max(seconds for _, seconds, _ in report["timeline"]) >= STALL - INTERVAL_SECONDS
    # the sleep (first) left the core, the spin (last) kept it as much as the machine let
    # it: the timeline tells which was which
    busy = [b for _, seconds, b in report["timeline"] if seconds >= STALL / 2]
    assert busy[0] < 0.25 and busy[-1] > busy[0], report["timeline"]
    seen = dict(report["inclusive"])
    assert seen.get("test_looplag.py:_deliberate_sleep_stall", 0) >= 1, report
    assert seen.get("test_looplag.py:_deliberate_spin_stall", 0) >= 1, report


def test_without_a_profile_path_no_thread_and_no_file(tmp_path: Path) -> None:
    lags: list[float] = []

    async def main() -> None:
        monitor = LoopLagMonitor(lags.append, "")
        monitor.start()
        await asyncio.sleep(scaled(INTERVAL_SECONDS * 3))
        monitor.stop()

    asyncio.run(main())
    assert lags and all(lag >= 0 for lag in lags)
    assert list(tmp_path.iterdir()) == []


def test_every_collection_is_timed_and_shows_in_a_stall_as_a_gc_frame() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    pauses.install()
    try:
        pauses.install()  # idempotent: one callback, not two
        start = time.perf_counter()
        gc.collect(2)
        end = time.perf_counter()
    finally:
        pauses.remove()
    assert [g for g, _ in seen] == [2]
    assert 0 < seen[0][1] <= end - start
    frames = pauses.within(start, end)
    assert frames and {stack for _, stack in frames} == {("gc:gen2",)}
    assert pauses.within(end, end + 1) == []  # not a collection of that window
    gc.collect(2)  # removed: nothing more is recorded
    assert len(seen) == 1
    report = StallReport()
    attribute(report, start, end, frames)
    assert report.innermost["gc:gen2"] == len(frames)


def test_freezing_the_startup_heap_hides_it_from_later_collections() -> None:
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 10_000  # this test process's imports
        assert len(gc.get_objects(2)) < frozen // 10  # the oldest generation is nearly empty
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert gc.get_freeze_count() == 0
