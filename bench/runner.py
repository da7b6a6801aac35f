"""Drives the load generator (bench/loadgen.mjs = the peers' run.js + a rooms file).

`Runner.run()` runs one scenario against one started target and returns the load
generator's JSON, tagged with what was run. `capacity()` and `split()` are the two
coderoom-only measurements (one gateway holding idle connections while a probe joins a
2 KB room; Redis traffic when rooms are split across gateways).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

from bench import looplag
from bench.pinning import from_env as pin_from_env
from bench.pinning import parse_pin
from bench.procs import cpu_seconds, http_get
from bench.scenarios import Scenario, capacity_step, join_probe, split_scenario
from bench.targets import Coderoom, RedisServer, Running

HERE = Path(__file__).resolve().parent
JSON = dict[str, Any]
METRIC = "coderoom_gateway_redis_messages_total"


class Target(Protocol):
    name: str
    adapter: str
    params: str


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Handle:
    """A load generator running in the background."""

    popen: subprocess.Popen[bytes]
    log: Path
    json_path: Path
    label: str
    deadline: float
    tags: JSON

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_connected(self) -> bool:
        """True once the load generator has connected every client it could."""
        while time.monotonic() < self.deadline:
            if re.search(r"\] connected \d+/\d+", self.log_text()):
                return True
            if self.popen.poll() is not None:
                return False
            time.sleep(0.1)
        return False


class _WindowScrapes(threading.Thread):
    """The gateways' metrics at the start and end of the measured window (connected,
    then the warm-up), so the loop lag can be read without the connect phase."""

    def __init__(self, handle: Handle, urls: Sequence[str], scen: Scenario) -> None:
        super().__init__(daemon=True)
        self.loadgen, self.urls, self.scen = handle, list(urls), scen
        self.start_texts: list[str] = []
        self.end_texts: list[str] = []
        if self.urls:
            self.start()

    def run(self) -> None:
        if not self.loadgen.wait_connected():
            return
        time.sleep(self.scen.warmup)
        self.start_texts = [read_metrics(u)[1] for u in self.urls]
        time.sleep(self.scen.duration)
        if self.loadgen.popen.poll() is None:  # still measuring: the window is whole
            self.end_texts = [read_metrics(u)[1] for u in self.urls]

    @property
    def ok(self) -> bool:
        return bool(self.start_texts) and bool(self.end_texts)


class Runner:
    def __init__(self, peers: Path, raw: Path) -> None:
        self.peers = peers
        self.raw = raw
        raw.mkdir(parents=True, exist_ok=True)
        self.results: list[JSON] = []
        self.failures: list[str] = []
        self.live: list[Handle] = []

    def spawn(
        self,
        target: Target,
        running: Running,
        scen: Scenario,
        label: str,
        *,
        urls: Sequence[str] | None = None,
        server_pids: Sequence[int] | None = None,
        aux_pids: Sequence[int] | None = None,
        rooms_file: Path | None = None,
        offset: int = 0,
        extra: Sequence[str] = (),
        tags: JSON | None = None,
        pin: str | None = None,
    ) -> Handle:
        stem = re.sub(r"[^A-Za-z0-9_.@-]+", "-", label)
        json_path = self.raw / f"{stem}.json"
        log = self.raw / f"{stem}.log"
        spids = running.server_pids if server_pids is None else server_pids
        apids = running.aux_pids if aux_pids is None else aux_pids
        argv = ["node", str(HERE / "loadgen.mjs"), "--peers", str(self.peers)]
        # PIN from the environment unless given: "-" = not pinned, else SERVER:LOADGEN.
        placement = pin_from_env() if pin is None else parse_pin(None if pin == "-" else pin)
        if rooms_file is not None:
            argv += ["--rooms-file", str(rooms_file), "--room-offset", str(offset)]
        argv += ["--adapter", target.adapter, "--urls", ",".join(urls or running.urls)]
        argv += [*scen.flags(), "--label", label, "--json", str(json_path)]
        if spids:
            argv += ["--server-pids", ",".join(map(str, spids))]
        if apids:
            argv += ["--aux-pids", ",".join(map(str, apids))]
        if target.params:
            argv += ["--params", target.params]
        argv += list(extra)
        json_path.unlink(missing_ok=True)
        if placement is not None:
            argv = placement.loadgen_argv(argv)
            for pid in placement.pin_servers([*spids, *apids]):
                say(f"!! {label}: could not pin pid {pid}")
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        handle = Handle(
            popen,
            log,
            json_path,
            label,
            time.monotonic() + scen.budget_s(),
            {"target": target.name, "scenario": scen.name, **(tags or {})},
        )
        self.live.append(handle)
        return handle

    def wait(self, handle: Handle) -> JSON:
        try:
            handle.popen.wait(timeout=max(1.0, handle.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            handle.popen.kill()
            handle.popen.wait()
            say(f"!! {handle.label}: load generator killed after its time budget")
        self.live.remove(handle)
        summary = [ln for ln in handle.log_text().splitlines() if ": clients " in ln]
        say("   " + (summary[-1].split("] ", 1)[-1] if summary else "(no summary line)"))
        if not handle.json_path.exists():
            tail = "\n".join(handle.log_text().splitlines()[-15:])
            say(f"!! {handle.label}: no result JSON; log {handle.log}:\n{tail}")
            self.failures.append(f"{handle.label}: no result (load generator failed or was killed)")
            result: JSON = {"meta": {"label": handle.label}, "failed": True}
        else:
            result = json.loads(handle.json_path.read_text())
        result["bench"] = {"pin": os.environ.get("PIN", ""), **handle.tags}
        return result

    def kill_all(self) -> None:
        """Stop load generators still running (the bench is being interrupted)."""
        for handle in self.live:
            if handle.popen.poll() is None:
                handle.popen.kill()
                handle.popen.wait()
        self.live.clear()

    def run(self, target: Target, running: Running, scen: Scenario, label: str, **kw: Any) -> JSON:
        say(f"== {label}: {scen.clients} clients, rate {scen.rate:g}, window {scen.duration:g}s")
        texts = [read_metrics(u)[1] for u in running.metrics_urls]
        before = [looplag.buckets(t) for t in texts]
        gc_before = [looplag.gc_buckets(t) for t in texts]
        repairs_before = [looplag.counters(t) for t in texts]
        aux_before = {pid: cpu_seconds(pid) for pid in running.aux_pids}
        handle = self.spawn(target, running, scen, label, **kw)
        window = _WindowScrapes(handle, running.metrics_urls, scen)
        result = self.wait(handle)
        if window.urls:
            window.join()
        # Each aux process (Redis, or every node of a cluster) on its own, whole run: the
        # busiest one says whether a cluster really splits the load.
        result["auxEach"] = [
            {"pid": pid, "cpu_s": round(used - start, 3)}
            for pid, start in aux_before.items()
            if start is not None and (used := cpu_seconds(pid)) is not None
        ]
        if running.metrics_urls:
            texts = [read_metrics(u)[1] for u in running.metrics_urls]
            after = [looplag.buckets(t) for t in texts]
            result["loopLag"] = lag = looplag.summary(before, after)  # connect + warmup included
            p50, p99, over = lag["p50"], lag["p99"], lag["over5ms"]
            say(f"   gateway loop lag p50 {p50} s, p99 {p99} s, ticks > 5 ms late: {over:g}")
            if window.ok:
                w = looplag.summary(
                    [looplag.buckets(t) for t in window.start_texts],
                    [looplag.buckets(t) for t in window.end_texts],
                )
                result["loopLagWindow"] = w
                say(
                    f"   gateway loop lag in the measured window: p50 {w['p50']} s, "
                    f"p99 {w['p99']} s, ticks > 5 ms late: {w['over5ms']:g} of {w['samples']:g}"
                )
            gcs = looplag.gc_summary(gc_before, [looplag.gc_buckets(t) for t in texts])
            result["gcPauses"] = gcs
            repairs = [
                {k: a[k] - b[k] for k in a}
                for b, a in zip(repairs_before, [looplag.counters(t) for t in texts], strict=True)
            ]
            result["repairs"] = repairs
            say(
                "   gateway repairs: resyncs "
                + ", ".join(f"{r['coderoom_gateway_resyncs_total']:g}" for r in repairs)
                + "; log catch-ups "
                + ", ".join(f"{r['coderoom_gateway_catchups_total']:g}" for r in repairs)
            )
            say(
                "   gateway GC: "
                + "; ".join(
                    f"gen{g} {s['collections']:g} (longest <= {s['longest']} s, "
                    f"{s['over5ms']:g} > 5 ms)"
                    for g, s in enumerate(gcs)
                )
            )
        self.results.append(result)
        return result


def capacity(
    runner: Runner, coderoom: Coderoom, steps: Sequence[int], hold: float, joins: int
) -> list[JSON]:
    """ONE gateway holds `n` idle clients; meanwhile a probe joins the 2 KB room `joins` times."""
    out = []
    for n in steps:
        running = coderoom.start(gateways=1)
        try:
            scen = capacity_step(n, hold)
            label = f"coderoom-1gw/cap{n}"
            say(f"== {label}: {n} idle clients on one gateway, then {joins} joins of a 2 KB room")
            handle = runner.spawn(
                coderoom,
                running,
                scen,
                label,
                rooms_file=coderoom.rooms_file,
                tags={"kind": "capacity"},
            )
            probe: JSON | None = None
            if handle.wait_connected():
                time.sleep(1.0)
                probe = runner.wait(
                    runner.spawn(
                        coderoom,
                        running,
                        join_probe(joins),
                        f"coderoom-1gw/join@{n}",
                        server_pids=[],
                        aux_pids=[],
                        rooms_file=coderoom.join_file,
                        extra=["--connect-concurrency", "1"],
                        tags={"kind": "join"},
                    )
                )
                if handle.popen.poll() is not None:
                    say("!! the join probe outlasted the idle hold: raise CAP_HOLD")
            result = runner.wait(handle)
            result["join_probe"] = probe
            runner.results.append(result)
            out.append(result)
        finally:
            coderoom.stop()
    return out


def read_metrics(url: str) -> tuple[dict[str, float], str]:
    """Prometheus text → {metric name: sum over its label sets}, plus the raw text."""
    status, text = http_get(url, timeout=5)
    sums: dict[str, float] = {}
    if status != 200:
        return sums, ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums, text


def redis_subscriptions(redis_server: RedisServer, block_ids: Sequence[str]) -> JSON:
    """Who subscribes to the room channels of `block_ids` (seen from Redis)."""
    from shared.keys import Keys

    keys = Keys()
    channels = [keys.room(b).channel for b in block_ids]
    r = redis_server.client
    numsub = dict(r.pubsub_numsub(*channels))
    shard: dict[Any, Any] = {}
    with contextlib.suppress(Exception):
        flat = cast(Any, r).execute_command("PUBSUB", "SHARDNUMSUB", *channels)
        shard = dict(zip(flat[::2], flat[1::2], strict=False))
    counts = [int(numsub.get(c.encode(), numsub.get(c, 0))) for c in channels]
    shard_counts = [int(shard.get(c.encode(), shard.get(c, 0))) for c in channels]
    clients = [
        {k: c.get(k) for k in ("id", "name", "sub", "psub", "ssub", "cmd")}
        for c in r.client_list()
        if int(c.get("sub", 0)) or int(c.get("psub", 0)) or int(c.get("ssub", 0) or 0)
    ]
    return {
        "room_channels": len(channels),
        "subscribers_per_channel": sorted(set(counts)),
        "shard_subscribers_per_channel": sorted(set(shard_counts)),
        "subscribed_clients": clients,
        "all_channels": len(r.pubsub_channels()),
    }


def split(runner: Runner, coderoom: Coderoom, quick: bool) -> JSON:
    """Rooms served by gateway 1 only: gateway 2 should receive no Redis room traffic."""
    running = coderoom.start()
    try:
        scen = split_scenario(quick)
        ids = coderoom.rooms_file.read_text().split()[: scen.rooms]
        before = [read_metrics(u)[0] for u in running.metrics_urls]
        say(f"== coderoom/split: {scen.rooms} rooms on gateway 1 only; gateway 2 idle")
        handle = runner.spawn(
            coderoom,
            replace(running, urls=running.urls[:1]),
            scen,
            "coderoom/split",
            rooms_file=coderoom.rooms_file,
            tags={"kind": "split"},
        )
        subs: JSON = {}
        if handle.wait_connected():
            time.sleep(1.0)
            subs = redis_subscriptions(coderoom.redis, ids)
        result = runner.wait(handle)
        time.sleep(0.5)
        after = [read_metrics(u) for u in running.metrics_urls]
        names = sorted(
            {n for m, _ in after for n in m if "redis" in n and not n.endswith("_created")}
        )
        deltas = {
            n: [
                round(a.get(n, 0.0) - b.get(n, 0.0), 1)
                for (a, _), b in zip(after, before, strict=True)
            ]
            for n in names
        }
        result["split"] = {
            "metric": METRIC,
            "metric_present": any(METRIC in m for m, _ in after),
            "deltas_gw1_gw2": deltas,
            "redis": subs,
        }
        runner.results.append(result)
        return result
    finally:
        coderoom.stop()
