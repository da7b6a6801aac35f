"""Write a bench's results: <kind>.json (condensed rows), <kind>.md, <kind>.png, README."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import machine_line
from bench.plot import latency_plot
from bench.report import (
    IDLE,
    PEERS,
    TRAFFIC,
    TRAFFIC_COLS,
    capacity_table,
    idle_cols,
    merge,
    ordered,
    render,
    row,
    split_text,
)
from bench.verdict import ratios, ratios_table, targets, targets_table

JSON = dict[str, Any]
START, END = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"


def write(
    out_dir: Path,
    kind: str,
    results: Sequence[JSON],
    target_names: Sequence[str],
    machine: JSON,
    notes: Sequence[str],
    elapsed: float,
    quick: bool,
    update_readme: bool,
    finished: str = "",
) -> tuple[list[Path], str]:
    """Write the files; return them and a console summary (ratios and targets)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [row(r) for r in results]
    merged = merge(rows)
    caps = sorted(
        (m for m in merged.values() if str(m["scenario"]).startswith("cap") and m["connected"]),
        key=lambda m: m["connected"] or 0,
    )
    split_m = merged.get("coderoom/split")
    peers = [p for p in PEERS if p in target_names]
    rat = ratios(merged, peers)
    verdicts = targets(merged, rat, caps, split_m)
    date = finished or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    png = latency_plot(
        merged,
        TRAFFIC,
        target_names,
        caps,
        out_dir / f"{kind}.png",
        f"coderoom bench ({kind}), {date}",
    )

    body = [
        f"# coderoom bench ({kind}), {date}",
        "",
        f"Machine: {machine_line(machine)}",
        f"Wall time {elapsed / 60:.1f} min."
        + (" QUICK: shortened windows (smoke run)." if quick else ""),
        "",
        "Load generator: the peers' `loadgen/run.js` through `bench/loadgen.mjs` (room *n* → "
        "n-th seeded block id). Latency = edit → observed by each other member of the room, "
        "one process, one clock. `fleet CPU` = all server processes + Redis (when the target "
        "uses it). `other CPU %` = machine busy CPU minus servers, Redis and load generator: "
        "other engineers' jobs on this shared 2-core machine (±5 is noise).",
        "",
    ]
    if noise(merged):
        body += [noise(merged), ""]
    for n in notes:
        body.append(f"> note: {n}")
    if notes:
        body.append("")
    traffic = ordered(merged, TRAFFIC, target_names)
    if traffic:
        body += ["## Traffic (median over runs)", "", render(TRAFFIC_COLS, traffic), ""]
    rtab = ratios_table(merged, rat, peers)
    if rtab:
        body += [
            "## coderoom / peer",
            "",
            "Ratios < 1 mean coderoom is lower (better).",
            "",
            rtab,
            "",
        ]
    idle = ordered(merged, IDLE, target_names)
    if idle:
        body += [
            "## Idle connections (both gateways / all instances)",
            "",
            render(idle_cols(merged), idle),
            "",
        ]
    if caps:
        body += [
            "## Capacity of ONE gateway process",
            "",
            "Idle clients (rooms of 1 mentor + 4 students) on one gateway; once connected, a probe "
            "joins a room whose document is ~2 KB, one join after another (join = connect → first "
            "sync done). The probe's extra sockets are included in the RSS figures; the "
            "gateway CPU column includes the probe's joins.",
            "",
            capacity_table(caps),
            "",
        ]
    st = split_text(split_m)
    if st:
        body += ["## Redis traffic when rooms are split across gateways", "", st, ""]
    body += ["## Targets", "", targets_table(verdicts), ""]
    if png:
        body += [f"![latency]({png.name})", ""]
    errs = {k: v for m in merged.values() for k, v in (m.get("error_kinds") or {}).items()}
    if errs:
        body += ["Client error kinds seen: " + ", ".join(f"`{k}` ×{v}" for k, v in errs.items())]
        samples = [s for r in results for s in (r.get("errors") or {}).get("samples", [])[:3]]
        body += ["", "First samples:", ""] + [f"- `{s}`" for s in samples[:8]] + [""]
    md = out_dir / f"{kind}.md"
    md.write_text("\n".join(body))

    js = out_dir / f"{kind}.json"
    js.write_text(
        json.dumps(
            {
                "kind": kind,
                "date": date,
                "machine": machine,
                "elapsed_s": round(elapsed),
                "notes": list(notes),
                "targets": [{"target": n, "status": s, "measured": d} for n, s, d in verdicts],
                "ratios": rat,
                "runs": [{k: v for k, v in r.items() if k != "error_kinds" or v} for r in rows],
            },
            indent=1,
        )
        + "\n"
    )
    files = [md, js] + ([png] if png else [])
    if update_readme:
        files.append(
            readme(
                out_dir, md, png, merged, rat, peers, target_names, caps, verdicts, machine, date
            )
        )
    summary = "\n\n".join(x for x in (rtab, targets_table(verdicts)) if x)
    return files, summary


def noise(merged: dict[str, JSON]) -> str:
    others = [m["other_cpu_pct"] for m in merged.values() if m.get("other_cpu_pct") is not None]
    if not others or max(others) <= 30:
        return ""
    return (
        f"**Noisy machine:** other processes used up to {max(others):.0f} % of a core during "
        "measured windows (see `other CPU %`); tails and CPU figures of those runs are "
        "inflated by contention, not by the target alone."
    )


def readme(
    out_dir: Path,
    md: Path,
    png: Path | None,
    merged: dict[str, JSON],
    rat: JSON,
    peers: Sequence[str],
    target_names: Sequence[str],
    caps: Sequence[JSON],
    verdicts: list[tuple[str, str, str]],
    machine: JSON,
    date: str,
) -> Path:
    index = bench_index(out_dir)
    path = index / "README.md"
    rel = out_dir.relative_to(index).as_posix()
    block = [
        START,
        f"## Latest side-by-side ({date}, `make bench-compare`)",
        "",
        f"Machine: {machine_line(machine)} Full results: [{rel}/{md.name}]({rel}/{md.name})"
        + (
            f"; reading: [{rel}/notes.md]({rel}/notes.md)."
            if (out_dir / "notes.md").exists()
            else "."
        ),
        "",
        noise(merged),
        "",
        render(TRAFFIC_COLS, ordered(merged, TRAFFIC, target_names)),
        "",
        ratios_table(merged, rat, peers),
        "",
    ]
    if caps:
        block += [capacity_table(caps), ""]
    if png:
        block += [f"![latency p50/p95/p99 per scenario and target]({rel}/{png.name})", ""]
    block += ["### Targets", "", targets_table(verdicts), "", END]
    text = path.read_text() if path.exists() else TEMPLATE
    if START in text and END in text:
        text = re.sub(
            re.escape(START) + ".*?" + re.escape(END), lambda _: "\n".join(block), text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + "\n".join(block) + "\n"
    path.write_text(text)
    return path


def bench_index(out_dir: Path) -> Path:
    """The folder whose README gets the latest block: the nearest above ``out_dir``
    whose README has it (docs/bench/ for OUT=docs/bench/<date>/<name> too), else the
    parent."""
    for folder in out_dir.parents:
        readme = folder / "README.md"
        if readme.is_file() and START in readme.read_text():
            return folder
    return out_dir.parent


TEMPLATE = f"""# Benchmarks

`make bench` measures coderoom alone; `make bench-compare` runs it side by side with the
reference peers (Socket.IO+Redis, Hocuspocus+Redis, single-process y-websocket) using the
same load generator and scenarios. How to run, what is started, how every figure is
counted: [bench/README.md](../../bench/README.md). Each dated folder holds one run's
Markdown, condensed JSON and latency plot. The machine is a shared 2-core VM: every table
has an "other CPU %" column (other engineers' jobs); large values mean noisy tails.

The block below is rewritten by each full `make bench-compare`; edit outside it.

{START}
_No full side-by-side run yet._
{END}

## What was tried

Gateway optimisations, measured before/after with `make bench-compare` (or
`SCENARIOS="wide bigroom" make bench` for a quicker look). One row per attempt, kept or not.

| date | change | scenario | before (p99 ms / fleet CPU ms per 1k) | after | kept? | notes |
|---|---|---|---|---|---|---|
| | | | | | | |
"""
