"""Latency plot: p50/p95/p99 per scenario per target (medians; dots = each run's p99)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
COLORS = {"p50": "#9ecae1", "p95": "#4292c6", "p99": "#08306b"}


def latency_plot(
    merged: dict[str, JSON],
    scenarios: Sequence[str],
    targets: Sequence[str],
    caps: Sequence[JSON],
    path: Path,
    title: str,
) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[tuple[str, JSON]], str]] = []
    for sc in scenarios:
        items = [(t, merged[f"{t}/{sc}"]) for t in targets if f"{t}/{sc}" in merged]
        if items and items[0][1]["p99"] is not None:
            panels.append((f"{sc}: edit → delivery", items, ""))
    joins = [
        (
            f"{m['connected']} held",
            {
                "p50": m["join_p50"],
                "p95": m["join_p95"],
                "p99": m["join_p99"],
                "other_cpu_pct": m["other_cpu_pct"],
            },
        )
        for m in caps
        if m["join_p95"] is not None
    ]
    if joins:
        panels.append(("join 2 KB room, ONE gateway", joins, ""))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 4.2), squeeze=False)
    for ax, (name, items, _) in zip(axes[0], panels, strict=True):
        width = 0.26
        for k, q in enumerate(("p50", "p95", "p99")):
            xs = [i + (k - 1) * width for i in range(len(items))]
            ax.bar(xs, [m[q] or 0 for _, m in items], width, color=COLORS[q], label=q)
        for i, (_, m) in enumerate(items):
            runs = [v for v in m.get("p99_runs", []) if v is not None]
            if len(runs) > 1:
                ax.plot([i + width] * len(runs), runs, "o", color="#e6550d", ms=3, zorder=3)
        names = [
            t if m.get("other_cpu_pct") is None else f"{t}\nother CPU {m['other_cpu_pct']:.0f}%"
            for t, m in items
        ]
        ax.set_xticks(range(len(items)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("ms")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title + "  (orange dots: p99 of each run)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
