"""The benchmark's pure helpers: PIN parsing, the loop-lag window, where the latest block
goes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import looplag
from bench.output import END, START, bench_index
from bench.pinning import Pin, parse_pin

TEXT = """# HELP coderoom_gateway_loop_lag_seconds lag
# TYPE coderoom_gateway_loop_lag_seconds histogram
coderoom_gateway_loop_lag_seconds_bucket{{le="0.001"}} {a}
coderoom_gateway_loop_lag_seconds_bucket{{le="0.005"}} {b}
coderoom_gateway_loop_lag_seconds_bucket{{le="0.05"}} {c}
coderoom_gateway_loop_lag_seconds_bucket{{le="+Inf"}} {c}
coderoom_gateway_loop_lag_seconds_count {c}
coderoom_gateway_loop_lag_seconds_sum 0.1
"""


def test_parse_pin() -> None:
    assert parse_pin(None) is None and parse_pin("") is None
    assert parse_pin("0:1") == Pin("0", "1")
    assert parse_pin("0,2-3:1") == Pin("0,2-3", "1")
    assert Pin("0", "1").loadgen_argv(["node", "x"]) == ["taskset", "-c", "1", "node", "x"]
    for bad in ("0", "0:", ":1", "a:1", "0;1"):
        with pytest.raises(ValueError, match="PIN"):
            parse_pin(bad)


def test_lag_window_over_two_gateways() -> None:
    before = [looplag.buckets(TEXT.format(a=10, b=10, c=10))] * 2
    after = [
        looplag.buckets(TEXT.format(a=100, b=109, c=110)),  # 90 fast, 9 < 5 ms, 1 slow
        looplag.buckets(TEXT.format(a=110, b=110, c=110)),  # 100 fast
    ]
    s = looplag.summary(before, after)
    assert s["samples"] == 200
    assert s["p50"] == 0.001
    assert s["p99"] == 0.005
    assert s["over5ms"] == 1
    assert looplag.percentile(looplag.window(before, after), 1.0) == 0.05
    assert looplag.window(before, after)[math.inf] == 200


def test_no_histogram_no_figure() -> None:
    assert looplag.summary([{}], [{}])["p99"] is None


GC_TEXT = """# HELP coderoom_gateway_gc_pause_seconds gc
# TYPE coderoom_gateway_gc_pause_seconds histogram
coderoom_gateway_gc_pause_seconds_bucket{{generation="0",le="0.001"}} {g0}
coderoom_gateway_gc_pause_seconds_bucket{{generation="0",le="0.005"}} {g0}
coderoom_gateway_gc_pause_seconds_bucket{{generation="0",le="0.05"}} {g0}
coderoom_gateway_gc_pause_seconds_bucket{{generation="0",le="+Inf"}} {g0}
coderoom_gateway_gc_pause_seconds_count{{generation="0"}} {g0}
coderoom_gateway_gc_pause_seconds_sum{{generation="0"}} 0.1
coderoom_gateway_gc_pause_seconds_bucket{{generation="2",le="0.001"}} 0
coderoom_gateway_gc_pause_seconds_bucket{{generation="2",le="0.005"}} {g2fast}
coderoom_gateway_gc_pause_seconds_bucket{{generation="2",le="0.05"}} {g2}
coderoom_gateway_gc_pause_seconds_bucket{{generation="2",le="+Inf"}} {g2}
coderoom_gateway_gc_pause_seconds_count{{generation="2"}} {g2}
coderoom_gateway_gc_pause_seconds_sum{{generation="2"}} 0.1
"""


def test_gc_pauses_per_generation_over_the_window() -> None:
    before = [looplag.gc_buckets(GC_TEXT.format(g0=100, g2fast=1, g2=1))]
    after = [looplag.gc_buckets(GC_TEXT.format(g0=900, g2fast=2, g2=5))]
    gen0, gen1, gen2 = looplag.gc_summary(before, after)
    assert gen0 == {"collections": 800, "longest": 0.001, "over5ms": 0}
    assert gen1 == {"collections": 0, "longest": None, "over5ms": 0}  # none exported
    assert gen2 == {"collections": 4, "longest": 0.05, "over5ms": 3}


def test_the_latest_block_goes_to_the_bench_index_however_deep_out_is(tmp_path: Path) -> None:
    docs = tmp_path / "docs" / "bench"
    (docs / "2026-11-30" / "s4").mkdir(parents=True)
    assert bench_index(docs / "2026-11-30") == docs  # no index yet: the parent
    (docs / "README.md").write_text(f"# Benchmarks\n\n{START}\n{END}\n")
    assert bench_index(docs / "2026-11-30") == docs
    assert bench_index(docs / "2026-11-30" / "s4") == docs  # OUT=docs/bench/<date>/s4
    assert bench_index(tmp_path / "elsewhere") == tmp_path


def test_the_script_cost_measure_runs_and_its_variants_differ(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import scriptcost

    monkeypatch.setenv("N", "50")
    scriptcost.main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" redis CPU")[0].strip() for line in lines] == list(scriptcost.VARIANTS)
