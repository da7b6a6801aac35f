"""Describe the machine a bench ran on (it is shared: say how busy it was, too)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _out(argv: list[str], cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr) else "?"


def _busy() -> tuple[float, float]:
    v = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(v)
    return total - v[3] - v[4], total


def busy_pct(seconds: float = 2.0) -> float:
    """Whole-machine busy CPU over `seconds`, in % of one core."""
    b0, t0 = _busy()
    time.sleep(seconds)
    b1, t1 = _busy()
    cores = os.cpu_count() or 1
    return round((b1 - b0) / max(t1 - t0, 1e-9) * 100 * cores, 1)


def describe(redis_version: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "?",
    )
    mem_kb = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    os_name = "?"
    for ln in Path("/etc/os-release").read_text().splitlines():
        if ln.startswith("PRETTY_NAME="):
            os_name = ln.split("=", 1)[1].strip('"')
    dirty = _out(["git", "status", "--porcelain", "--", "services", "shared"], cwd=ROOT)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "node": _out(["node", "--version"]),
        "redis": redis_version,
        "uv": _out(["uv", "--version"]),
        "git_commit": _out(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT),
        "git_dirty_services_shared": dirty not in ("", "?"),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "busy_pct_of_core_at_start": busy_pct(),
    }


def machine_line(m: dict[str, Any]) -> str:
    dirty = (
        " (uncommitted changes in services/ or shared/)"
        if m.get("git_dirty_services_shared")
        else ""
    )
    if m.get("coderoom_code"):
        dirty = f", measured {m['coderoom_code']}"
    return (
        f"{m['nproc']} vCPU ({m['cpu_model']}), {m['mem_gib']} GiB, {m['os']}, "
        f"kernel {m['kernel']}; Python {m['python']}, Node {m['node']}, Redis {m['redis']}; "
        f"coderoom at {m['git_commit']}{dirty}. "
        f"Machine busy before the bench: {m['busy_pct_of_core_at_start']} % of one core "
        f"(load average {' '.join(m['loadavg_start'])}), shared with other engineers' jobs."
    )
