"""How late the gateway's event loop runs: the lag histogram, and what ran during stalls.

A stalled loop delays every keystroke in flight on this gateway, so the loop's lag is the
first thing to read when the latency tail grows (docs/bench/, issue #13). The monitor
asks the loop to call it back every ``interval`` and records how late the call came
(``coderoom_gateway_loop_lag_seconds``): ten timer callbacks a second, nothing else.

With ``LOOP_STALL_PROFILE=<file>`` a thread also samples the loop thread's Python stack
about every millisecond; each stall longer than ``STALL_SECONDS`` is attributed to the
functions seen running inside it, and the totals are written to the file as JSON at
shutdown. The sampler needs the GIL, so during a stall it gets in at least once per
``sys.getswitchinterval()`` (5 ms): a diagnosis tool for benchmarks, off by default.
The attribution itself (``attribute``) is pure and unit-tested.

The cyclic garbage collector stops the loop thread too, and no Python-level sampler can
see it (a collection runs inside whatever frame allocated last): ``GcPauses`` times every
collection through ``gc.callbacks`` into ``coderoom_gateway_gc_pause_seconds`` (by
generation), and the stall profile counts the collections inside each stall as a frame
``gc:gen<N>``. ``freeze_startup_heap`` takes what the process built before serving
(modules, classes, settings: some 66,000 objects, 23 ms of every full collection on this
VM) out of the collector's sight for good.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

INTERVAL_SECONDS = 0.1
PROFILE_INTERVAL_SECONDS = 0.01  # with the stall profile on, a tick every 10 ms
STALL_SECONDS = 0.005
SAMPLE_SECONDS = 0.001
STACK_DEPTH = 12
SAMPLES_KEPT = 4096  # about 4 s of samples: a stall is attributed right after it ends

Frame = str  # "file.py:function"
Sample = tuple[float, tuple[Frame, ...]]  # (perf_counter, innermost frame first)


@dataclass(slots=True)
class StallReport:
    """Stalls longer than the threshold, and the frames seen running during them."""

    stalls: int = 0
    stalled_seconds: float = 0.0
    working_seconds: float = 0.0  # the part of the stalls the loop thread was on a core
    longest_seconds: float = 0.0
    samples: int = 0
    # frame -> samples in which it was on the stack (inclusive) / innermost (self)
    inclusive: collections.Counter[Frame] = field(default_factory=collections.Counter)
    innermost: collections.Counter[Frame] = field(default_factory=collections.Counter)
    # (start, seconds, busy) of the latest stalls: their spacing shows periodic work;
    # busy = the loop thread's CPU time over the tick's whole window / its wall time:
    # near 1 the loop was working, near 0 it was waiting for a core (another process)
    timeline: collections.deque[tuple[float, float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )

    def as_json(self, top: int = 40) -> dict[str, object]:
        return {
            "stalls": self.stalls,
            "stalledSeconds": round(self.stalled_seconds, 4),
            "workingSeconds": round(self.working_seconds, 4),
            "longestSeconds": round(self.longest_seconds, 4),
            "samples": self.samples,
            "inclusive": self.inclusive.most_common(top),
            "innermost": self.innermost.most_common(top),
            "timeline": [(round(t, 4), round(d, 4), round(b, 2)) for t, d, b in self.timeline],
        }


def attribute(
    report: StallReport, start: float, end: float, samples: Iterable[Sample], busy: float = 1.0
) -> None:
    """Add one stall [start, end] to the report, with the samples taken inside it."""
    report.stalls += 1
    report.stalled_seconds += end - start
    report.longest_seconds = max(report.longest_seconds, end - start)
    report.working_seconds += (end - start) * min(1.0, busy)
    report.timeline.append((start, end - start, busy))
    for at, stack in samples:
        if start <= at <= end and stack:
            report.samples += 1
            report.innermost[stack[0]] += 1
            report.inclusive.update(set(stack))


def summarise(frame: object | None, depth: int = STACK_DEPTH) -> tuple[Frame, ...]:
    """The innermost ``depth`` frames of a Python stack as ``file:function`` names."""
    out: list[Frame] = []
    while frame is not None and len(out) < depth:
        code = frame.f_code  # type: ignore[attr-defined]
        out.append(f"{Path(code.co_filename).name}:{code.co_name}")
        frame = frame.f_back  # type: ignore[attr-defined]
    return tuple(out)


GcObserve = Callable[[int, float], None]  # generation, seconds


class GcPauses:
    """Times every cyclic collection of this process (``gc.callbacks``): each pause goes
    to ``observe`` and into a ring of recent ones, for the stall profile."""

    def __init__(self, observe: GcObserve) -> None:
        self._observe = observe
        self._started = 0.0
        self.recent: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=256)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        generation = info.get("generation", 0)
        self.recent.append((self._started, now, generation))
        self._observe(generation, now - self._started)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def within(self, start: float, end: float) -> list[Sample]:
        """The collections that ran inside [start, end], as samples of a ``gc`` frame
        (one per millisecond of pause, at least one), for ``attribute``."""
        out: list[Sample] = []
        for begun, ended, generation in list(self.recent):
            if begun >= start and ended <= end:
                frame = (f"gc:gen{generation}",)
                steps = max(1, int((ended - begun) / SAMPLE_SECONDS))
                out.extend((begun + i * SAMPLE_SECONDS, frame) for i in range(steps))
        return out


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive into the permanent generation (Python's
    ``gc.freeze``): objects made before serving live as long as the process, and no later
    collection needs to scan them again. Returns how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class _Sampler(threading.Thread):
    """Samples one thread's stack into a ring buffer (only with LOOP_STALL_PROFILE)."""

    def __init__(self, target_thread: int) -> None:
        super().__init__(name="loop-stall-sampler", daemon=True)
        self._target = target_thread
        self.samples: collections.deque[Sample] = collections.deque(maxlen=SAMPLES_KEPT)
        self._stop = threading.Event()

    def run(self) -> None:
        frames = sys._current_frames
        while not self._stop.wait(SAMPLE_SECONDS):
            frame = frames().get(self._target)
            self.samples.append((time.perf_counter(), summarise(frame)))

    def stop(self) -> None:
        self._stop.set()

    def window(self, start: float, end: float) -> Sequence[Sample]:
        return [s for s in list(self.samples) if start <= s[0] <= end]


class LoopLagMonitor:
    """Records the loop's lag into a histogram; optionally attributes stalls."""

    def __init__(
        self,
        observe: Callable[[float], None],
        profile_path: str = "",
        gc_observe: GcObserve | None = None,
    ) -> None:
        self._observe = observe
        self.gc = GcPauses(gc_observe or (lambda generation, seconds: None))
        # "{pid}" in the path: one file per gateway when several share an environment.
        self._profile_path = profile_path.replace("{pid}", str(os.getpid()))
        self._interval = PROFILE_INTERVAL_SECONDS if profile_path else INTERVAL_SECONDS
        self.report = StallReport()
        self._sampler: _Sampler | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._scheduled = (0.0, 0.0)  # (wall, loop thread CPU) when the tick was asked for
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.gc.install()
        if self._profile_path:
            self._sampler = _Sampler(threading.get_ident())
            self._sampler.start()
        self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        now = time.perf_counter()
        # The loop thread's CPU time only for the stall profile (a syscall per tick).
        self._scheduled = (now, time.thread_time() if self._sampler is not None else 0.0)
        self._due = now + self._interval
        self._handle = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        lag = max(0.0, now - self._due)
        self._observe(lag)
        if lag > STALL_SECONDS and self._sampler is not None:
            start = self._due
            wall_at, cpu_at = self._scheduled
            busy = (time.thread_time() - cpu_at) / max(now - wall_at, 1e-9)
            samples = [*self._sampler.window(start, now), *self.gc.within(start, now)]
            attribute(self.report, start, now, samples, busy)
        self._schedule()

    def stop(self) -> None:
        self.gc.remove()
        if self._handle is not None:
            self._handle.cancel()
        if self._sampler is not None:
            self._sampler.stop()
            Path(self._profile_path).write_bytes(
                orjson.dumps(self.report.as_json(), option=orjson.OPT_INDENT_2)
            )
