"""Turn load-generator results into rows, Markdown tables and ratios coderoom/peer.

A row is one run, flattened (`row()`); runs with the same label (target/scenario) are
merged by median, column by column, except 'other CPU %' (the worst run). "fleet CPU"
is every server process plus Redis when the target uses one: coderoom's 2 gateways +
Redis, Socket.IO's and Hocuspocus' 2 instances + Redis, y-websocket's single process.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

JSON = dict[str, Any]
TRAFFIC = ("small", "wide", "bigroom")
IDLE = ("idle2000", "idle5000")
PEERS = ("socketio", "hocuspocus", "ywebsocket")


def _get(d: Any, path: str) -> Any:
    for key in path.split("."):
        d = d.get(key) if isinstance(d, dict) else None
    return d


def row(r: JSON) -> JSON:
    """One run, flattened to the figures the tables use."""
    b = r.get("bench", {})
    srv, aux, host = r.get("server") or {}, r.get("aux") or {}, r.get("host_measure") or {}
    observed = _get(r, "deliveries.observed") or 0
    fleet_s = (srv.get("cpu_s_measure") or 0) + (aux.get("cpu_s_measure") or 0)
    probe = r.get("join_probe") or {}
    return {
        "label": f"{b.get('target')}/{b.get('scenario')}",
        "target": b.get("target"),
        "scenario": b.get("scenario"),
        "repeat": b.get("repeat", 1),
        "failed": bool(r.get("failed")),
        "clients": _get(r, "meta.clients"),
        "connected": _get(r, "connect.ok"),
        "connect_failed": _get(r, "connect.failed"),
        "retries": _get(r, "connect.retries"),
        "conn_wall_s": _get(r, "connect.wall_s"),
        "conn_p50": _get(r, "connect.ms.p50"),
        "conn_p95": _get(r, "connect.ms.p95"),
        "conn_max": _get(r, "connect.ms.max"),
        "edits": _get(r, "edits.sent_measured"),
        "edits_target": _get(r, "edits.target_measured"),
        "missed_slots": _get(r, "edits.missed_slots"),
        "expected": _get(r, "deliveries.expected"),
        "observed": observed,
        "lost": _get(r, "deliveries.lost"),
        "loss_pct": _get(r, "deliveries.loss_pct"),
        "duplicates": _get(r, "deliveries.duplicates"),
        "p50": _get(r, "latency_ms.p50"),
        "p95": _get(r, "latency_ms.p95"),
        "p99": _get(r, "latency_ms.p99"),
        "max": _get(r, "latency_ms.max"),
        "deliv_s": _get(r, "deliveries.per_s"),
        "errors": _get(r, "errors.count"),
        "error_kinds": _get(r, "errors.byKind") or {},
        "srv_cpu_pct": srv.get("cpu_pct_of_core_measure"),
        "srv_ms_1k": srv.get("cpu_ms_per_1k_deliveries"),
        "fleet_ms_1k": round(fleet_s * 1e6 / observed, 1) if observed else None,
        "srv_cpu_s_connect": srv.get("cpu_s_connect_phase"),
        "srv_rss_base": srv.get("rss_mb_baseline"),
        "srv_rss_end": srv.get("rss_mb_measure_end"),
        "srv_rss_peak": srv.get("rss_mb_peak"),
        "kb_per_conn": srv.get("kb_per_connection"),
        "redis_cpu_pct": aux.get("cpu_pct_of_core_measure"),
        "redis_busiest_ms_1k": (
            round(max(a["cpu_s"] for a in r["auxEach"]) * 1e6 / observed, 1)
            if observed and r.get("auxEach")
            else None
        ),
        "redis_rss_end": aux.get("rss_mb_measure_end"),
        "loadgen_cpu_pct": _get(r, "loadgen.cpu_pct_of_core_measure"),
        "loadgen_el_p99": _get(r, "loadgen.event_loop_delay_ms.p99"),
        "other_cpu_pct": host.get("other_pct_of_core"),
        "server_died": r.get("server_pids_died") or [],
        "join_n": _get(probe, "connect.ok"),
        "join_failed": _get(probe, "connect.failed"),
        "join_p50": _get(probe, "connect.ms.p50"),
        "join_p95": _get(probe, "connect.ms.p95"),
        "join_p99": _get(probe, "connect.ms.p99"),
        "join_max": _get(probe, "connect.ms.max"),
        "split": r.get("split"),
    }


def median(values: Iterable[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return statistics.median(nums) if nums else None


def merge(rows: Sequence[JSON]) -> dict[str, JSON]:
    """label → medians over its runs (+ 'runs', worst 'other_cpu_pct', summed losses/errors)."""
    groups: dict[str, list[JSON]] = {}
    for r in rows:
        groups.setdefault(r["label"], []).append(r)
    merged = {}
    for label, rs in groups.items():
        m: JSON = {
            k: median(r[k] for r in rs) for k in rs[0] if k not in ("label", "target", "scenario")
        }
        m.update(label=label, target=rs[0]["target"], scenario=rs[0]["scenario"], runs=len(rs))
        others = [r["other_cpu_pct"] for r in rs if r["other_cpu_pct"] is not None]
        m["other_cpu_pct"] = max(others) if others else None
        for k in ("lost", "errors", "duplicates", "connect_failed"):
            m[f"{k}_total"] = sum(r[k] or 0 for r in rs)
        m["failed_runs"] = sum(r["failed"] for r in rs)
        m["p99_runs"] = [r["p99"] for r in rs]
        m["error_kinds"] = {k: v for r in rs for k, v in r["error_kinds"].items()}
        m["split"] = next((r["split"] for r in rs if r["split"]), None)
        merged[label] = m
    return merged


def fmt(x: Any, d: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    t = f"{x:.{d}f}"
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return "0" if t == "-0" else t


def table(head: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines)


Col = tuple[str, Callable[[JSON], Any], int]


def render(cols: Sequence[Col], items: Iterable[JSON]) -> str:
    return table([c[0] for c in cols], ([fmt(f(m), d) for _, f, d in cols] for m in items))


def ordered(
    merged: dict[str, JSON], scenarios: Sequence[str], targets: Sequence[str]
) -> list[JSON]:
    return [merged[f"{t}/{s}"] for s in scenarios for t in targets if f"{t}/{s}" in merged]


TRAFFIC_COLS: list[Col] = [
    ("run", lambda m: m["label"], 0),
    ("runs", lambda m: m["runs"], 0),
    ("clients", lambda m: m["connected"], 0),
    ("edits", lambda m: m["edits"], 0),
    ("deliveries", lambda m: m["expected"], 0),
    ("lost (all runs)", lambda m: m["lost_total"], 0),
    ("p50 ms", lambda m: m["p50"], 1),
    ("p95 ms", lambda m: m["p95"], 1),
    ("p99 ms", lambda m: m["p99"], 1),
    ("max ms", lambda m: m["max"], 0),
    ("deliv/s", lambda m: m["deliv_s"], 0),
    ("errs", lambda m: m["errors_total"], 0),
    ("srv CPU %", lambda m: m["srv_cpu_pct"], 0),
    ("srv CPU ms/1k", lambda m: m["srv_ms_1k"], 0),
    ("fleet CPU ms/1k (+Redis)", lambda m: m["fleet_ms_1k"], 0),
    ("srv RSS end MB", lambda m: m["srv_rss_end"], 0),
    ("redis CPU %", lambda m: m["redis_cpu_pct"], 0),
    ("busiest Redis ms/1k (whole run)", lambda m: m["redis_busiest_ms_1k"], 1),
    ("loadgen CPU %", lambda m: m["loadgen_cpu_pct"], 0),
    ("loadgen EL p99 ms", lambda m: m["loadgen_el_p99"], 0),
    ("other CPU % (max)", lambda m: m["other_cpu_pct"], 0),
]


def _slash(m: JSON, *keys: str) -> str:
    return " / ".join(fmt(m[k], 0) for k in keys)


def _arrow(m: JSON) -> str:
    return f"{fmt(m['srv_rss_base'], 0)} → {fmt(m['srv_rss_end'], 0)}"


def idle_cols(merged: dict[str, JSON]) -> list[Col]:
    def marginal(m: JSON) -> float | None:
        return marginal_kb(merged, m["target"]) if m["scenario"] == "idle5000" else None

    return [
        ("run", lambda m: m["label"], 0),
        ("connected", lambda m: m["connected"], 0),
        ("failed", lambda m: m["connect_failed_total"], 0),
        ("retries", lambda m: m["retries"], 0),
        ("conn wall s", lambda m: m["conn_wall_s"], 1),
        ("conn p50 / p95 / max ms", lambda m: _slash(m, "conn_p50", "conn_p95", "conn_max"), 0),
        ("errs", lambda m: m["errors_total"], 0),
        ("srv RSS base → held MB", lambda m: _arrow(m), 0),
        ("srv peak MB", lambda m: m["srv_rss_peak"], 0),
        ("KB/conn (held − base)", lambda m: m["kb_per_conn"], 1),
        ("marginal KB/conn (5000 vs 2000)", marginal, 1),
        ("srv CPU s to connect", lambda m: m["srv_cpu_s_connect"], 1),
        ("srv CPU % idle", lambda m: m["srv_cpu_pct"], 1),
        ("other CPU %", lambda m: m["other_cpu_pct"], 0),
    ]


def marginal_kb(
    merged: dict[str, JSON], target: str, lo: str = "idle2000", hi: str = "idle5000"
) -> float | None:
    a, b = merged.get(f"{target}/{lo}"), merged.get(f"{target}/{hi}")
    if not a or not b or a["srv_rss_end"] is None or b["srv_rss_end"] is None:
        return None
    dn = (b["connected"] or 0) - (a["connected"] or 0)
    return round((b["srv_rss_end"] - a["srv_rss_end"]) * 1024 / dn, 1) if dn > 0 else None


def capacity_table(caps: Sequence[JSON]) -> str:
    if not caps:
        return ""
    steps = sorted(caps, key=lambda m: m["connected"] or 0)
    body = []
    for i, m in enumerate(steps):
        marg = None
        if i > 0 and steps[0]["srv_rss_end"] is not None and m["srv_rss_end"] is not None:
            dn = (m["connected"] or 0) - (steps[0]["connected"] or 0)
            marg = (m["srv_rss_end"] - steps[0]["srv_rss_end"]) * 1024 / dn if dn > 0 else None
        joins = f"{fmt(m['join_p50'])} / {fmt(m['join_p95'])} / {fmt(m['join_max'])}"
        joins += f" ({fmt(m['join_n'], 0)} joins"
        joins += f", {fmt(m['join_failed'], 0)} failed)" if m["join_failed"] else ")"
        body.append(
            [
                m["label"],
                fmt(m["connected"], 0),
                fmt(m["connect_failed_total"], 0),
                fmt(m["errors_total"], 0),
                _arrow(m),
                fmt(m["kb_per_conn"], 1),
                fmt(marg, 1) if i else "",
                _slash(m, "conn_p50", "conn_p95"),
                joins,
                fmt(m["srv_cpu_pct"], 1),
                fmt(m["other_cpu_pct"], 0),
            ]
        )
    head = [
        "run (ONE gateway)",
        "connected",
        "failed",
        "errs",
        "gateway RSS base → held MB",
        "KB/conn (held − base)",
        f"marginal KB/conn (vs {steps[0]['connected']})",
        "connect p50 / p95 ms",
        "join 2 KB room p50 / p95 / max ms",
        "gateway CPU % (hold + probe)",
        "other CPU %",
    ]
    return table(head, body)


def split_text(m: JSON | None) -> str:
    if not m or not m.get("split"):
        return ""
    s = m["split"]
    lines = [
        f"Rooms on gateway 1 only ({fmt(m['connected'], 0)} clients, "
        f"{fmt(m['observed'], 0)} deliveries, lost {fmt(m['lost_total'], 0)}):",
        "",
    ]
    if not s["metric_present"]:
        lines.append(f"- `{s['metric']}`: **absent** from the gateways' /metrics.")
    for name, (g1, g2) in s["deltas_gw1_gw2"].items():
        lines.append(f"- `{name}` increase: gateway 1 = {fmt(g1, 0)}, gateway 2 = {fmt(g2, 0)}")
    redis = s.get("redis") or {}
    if redis:
        clients = ", ".join(
            f"{c.get('name') or c.get('id')} sub={c.get('sub')} psub={c.get('psub')} "
            f"ssub={c.get('ssub')}"
            for c in redis["subscribed_clients"]
        )
        lines.append(
            f"- Redis: subscribers per room channel {redis['subscribers_per_channel']} "
            f"(sharded: {redis['shard_subscribers_per_channel']}), "
            f"{redis['all_channels']} channels in all; subscribed clients: {clients}"
        )
    return "\n".join(lines)
