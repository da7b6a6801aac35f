"""The gateways' event-loop lag over one run, from their `coderoom_gateway_loop_lag_seconds`
histograms scraped before and after (bucket differences; percentiles as bucket bounds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

NAME = "coderoom_gateway_loop_lag_seconds"
GC_NAME = "coderoom_gateway_gc_pause_seconds"
Buckets = dict[float, float]  # upper bound -> cumulative count


def buckets(text: str, name: str = NAME, **labels: str) -> Buckets:
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != name + "_bucket":
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                out[float(sample.labels["le"])] = sample.value
    return out


def gc_buckets(text: str) -> list[Buckets]:
    """The gateway's GC pause histogram of each generation (0, 1, 2)."""
    return [buckets(text, GC_NAME, generation=str(g)) for g in range(3)]


def window(before: Sequence[Buckets], after: Sequence[Buckets]) -> Buckets:
    """Summed over gateways: what was observed between the two scrapes."""
    total: Buckets = {}
    for b, a in zip(before, after, strict=True):
        for le, count in a.items():
            total[le] = total.get(le, 0.0) + count - b.get(le, 0.0)
    return total


def percentile(cumulative: Mapping[float, float], q: float) -> float | None:
    """The smallest bucket bound holding a fraction q of the observations."""
    if not cumulative:
        return None
    n = cumulative[max(cumulative)]
    if n <= 0:
        return None
    for le in sorted(cumulative):
        if cumulative[le] >= q * n:
            return le
    return None


def summary(before: Sequence[Buckets], after: Sequence[Buckets]) -> dict[str, float | None]:
    w = window(before, after)
    over = w.get(float("inf"), 0.0) - w.get(0.005, 0.0)
    return {
        "samples": w.get(float("inf"), 0.0),
        "p50": percentile(w, 0.5),
        "p99": percentile(w, 0.99),
        "over5ms": over,
    }


def gc_summary(
    before: Sequence[Sequence[Buckets]], after: Sequence[Sequence[Buckets]]
) -> list[dict[str, float | None]]:
    """Per generation, summed over gateways: collections, the longest pause's bucket
    bound, and how many paused the loop for more than 5 ms."""
    out = []
    for g in range(3):
        w = window([b[g] for b in before], [a[g] for a in after])
        n = w.get(float("inf"), 0.0)
        longest = percentile(w, 1.0)  # the smallest bound holding every pause
        out.append({"collections": n, "longest": longest, "over5ms": n - w.get(0.005, 0.0)})
    return out


COUNTERS = ("coderoom_gateway_resyncs_total", "coderoom_gateway_catchups_total")


def counters(text: str) -> dict[str, float]:
    """The gateway's repair counters (rooms resynced, logs read to fill a gap): in a run
    without faults both should stay near zero; a rise points at a bug or a stall."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] = sample.value
    return out
