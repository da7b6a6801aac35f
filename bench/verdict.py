"""Ratios coderoom/peer and the performance targets, each met / not met / not measured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import PEERS, TRAFFIC, fmt, marginal_kb, table

JSON = dict[str, Any]
ME = "coderoom"
PEER_TITLE = {
    "socketio": "Socket.IO+Redis",
    "hocuspocus": "Hocuspocus+Redis",
    "ywebsocket": "y-websocket",
}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b not in (None, 0) else None


def ratios(merged: dict[str, JSON], peers: Sequence[str]) -> JSON:
    out: JSON = {}
    for sc in TRAFFIC:
        me = merged.get(f"{ME}/{sc}")
        if not me:
            continue
        for p in peers:
            other = merged.get(f"{p}/{sc}")
            if other:
                out[f"{sc}/{p}"] = {
                    "p99": ratio(me["p99"], other["p99"]),
                    "fleet_cpu_ms_1k": ratio(me["fleet_ms_1k"], other["fleet_ms_1k"]),
                }
    me_kb = marginal_kb(merged, ME)
    for p in peers:
        kb = marginal_kb(merged, p)
        if me_kb is not None and kb is not None:
            out[f"idle/{p}"] = {
                "marginal_kb_per_conn": ratio(me_kb, kb),
                "coderoom": me_kb,
                "peer": kb,
            }
    return out


def ratios_table(merged: dict[str, JSON], r: JSON, peers: Sequence[str]) -> str:
    body = []
    for sc in TRAFFIC:
        me = merged.get(f"{ME}/{sc}")
        if not me:
            continue
        cells = [sc, f"{fmt(me['p99'])} ms / {fmt(me['fleet_ms_1k'], 0)} ms"]
        for p in peers:
            x = r.get(f"{sc}/{p}")
            cells.append(f"{fmt(x['p99'], 2)}× / {fmt(x['fleet_cpu_ms_1k'], 2)}×" if x else "–")
        body.append(cells)
    if any(f"idle/{p}" in r for p in peers):
        cells = ["idle: extra KB/conn 2000→5000", f"{fmt(marginal_kb(merged, ME))} KB"]
        for p in peers:
            x = r.get(f"idle/{p}")
            cells.append(
                f"{fmt(x['marginal_kb_per_conn'], 2)}× (peer {fmt(x['peer'])} KB)" if x else "–"
            )
        body.append(cells)
    head = ["scenario", "coderoom p99 / fleet CPU per 1k deliv"] + [
        f"vs {PEER_TITLE[p]} (p99 / CPU)" for p in peers
    ]
    return table(head, body) if body else ""


def targets(
    merged: dict[str, JSON], r: JSON, caps: Sequence[JSON], split: JSON | None
) -> list[tuple[str, str, str]]:
    """[(target, met | NOT MET | not measured, measured figures)]."""
    res: list[tuple[str, str, str]] = []
    for sc in ("wide", "bigroom"):
        for key, what in (("p99", "p99"), ("fleet_cpu_ms_1k", "CPU per 1k deliveries")):
            name = f"{sc}: {what} < Hocuspocus+Redis and < Socket.IO+Redis, ≤ 1.5× y-websocket"
            got: dict[str, float] = {}
            for p in PEERS:
                v = (r.get(f"{sc}/{p}") or {}).get(key)
                if v is not None:
                    got[p] = v
            if len(got) < len(PEERS):
                res.append(
                    (name, "not measured", "needs `make bench-compare` with all three peers")
                )
                continue
            ok = got["hocuspocus"] < 1 and got["socketio"] < 1 and got["ywebsocket"] <= 1.5
            detail = ", ".join(f"{fmt(got[p], 2)}× {PEER_TITLE[p]}" for p in PEERS)
            res.append((name, "met" if ok else "NOT MET", f"coderoom/peer: {detail}"))
    mine = [m for m in merged.values() if m["target"] == ME]
    if mine:
        lost = sum(m["lost_total"] for m in mine)
        failed = sum(m["connect_failed_total"] + m["failed_runs"] for m in mine)
        runs = sum(m["runs"] for m in mine)
        res.append(
            (
                "zero loss in every scenario (and every client connected)",
                "met" if lost == 0 and failed == 0 else "NOT MET",
                f"{runs} coderoom runs: {lost} deliveries lost, {failed} failed connects/runs",
            )
        )
    else:
        res.append(("zero loss in every scenario", "not measured", "no coderoom run"))
    steps = sorted((m for m in caps if m["connected"] is not None), key=lambda m: m["connected"])
    big = [m for m in steps if (m["connected"] or 0) >= 5000]
    name = "idle: ≥ 5,000 connections per gateway process at ≤ 12 KB extra each"
    if big and len(steps) >= 2:
        lo, hi = steps[0], big[0]
        dn = hi["connected"] - lo["connected"]
        marg = (hi["srv_rss_end"] - lo["srv_rss_end"]) * 1024 / dn if dn > 0 else None
        ok = hi["connect_failed_total"] == 0 and marg is not None and marg <= 12
        detail = (
            f"one gateway held {hi['connected']} ({hi['connect_failed_total']} failed); "
            f"{fmt(marg)} KB extra per connection ({lo['connected']}→{hi['connected']}, "
            f"{fmt(marg / 12 if marg else None, 2)}× the bound); "
            f"held − base at {hi['connected']}: {fmt(hi['kb_per_conn'])} KB"
        )
        res.append((name, "met" if ok else "NOT MET", detail))
    else:
        detail = f"largest step held {steps[-1]['connected']}" if steps else "no capacity run"
        res.append((name, "NOT MET" if steps else "not measured", detail))
    name = "join p95 ≤ 100 ms (2 KB document, connect → synced) while 5,000 are connected"
    if big and big[0]["join_p95"] is not None:
        p95 = big[0]["join_p95"]
        ok = p95 <= 100 and not big[0]["join_failed"]
        detail = (
            f"p50 {fmt(big[0]['join_p50'])} ms, p95 {fmt(p95)} ms "
            f"({fmt(p95 / 100, 2)}× the bound), "
            f"{fmt(big[0]['join_n'], 0)} joins, {fmt(big[0]['join_failed'], 0)} failed"
        )
        res.append((name, "met" if ok else "NOT MET", detail))
    else:
        res.append((name, "not measured", "no join probe at ≥ 5,000 connections"))
    res.append(split_target(split))
    return res


def split_target(m: JSON | None) -> tuple[str, str, str]:
    name = "a gateway receives Redis traffic only for rooms it serves"
    if not m or not m.get("split"):
        return name, "not measured", "no split run"
    s = m["split"]
    subs = (s.get("redis") or {}).get("subscribers_per_channel")
    sharded = (s.get("redis") or {}).get("shard_subscribers_per_channel")
    via_redis = f"Redis subscribers per room channel: {subs} (sharded {sharded})"
    if not s["metric_present"]:
        clients = (s.get("redis") or {}).get("subscribed_clients") or []
        patterns = sum(int(c.get("psub") or 0) for c in clients)
        one = [1] in (subs, sharded) and patterns == 0
        status = "met (Redis-side evidence only)" if one else "not measured"
        return (
            name,
            status,
            f"`{s['metric']}` absent from /metrics; {via_redis}, pattern subscriptions {patterns}",
        )
    g1, g2 = s["deltas_gw1_gw2"][s["metric"]]
    ok = g1 > 0 and g2 <= 0.01 * g1
    return (
        name,
        "met" if ok else "NOT MET",
        f"`{s['metric']}` rose by {fmt(g1, 0)} on the serving gateway, {fmt(g2, 0)} on the other "
        f"({fmt(g2 / g1 if g1 else None, 3)}×); {via_redis}",
    )


def targets_table(rows: list[tuple[str, str, str]]) -> str:
    return table(["target", "status", "measured"], ([n, f"**{s}**", d] for n, s, d in rows))
