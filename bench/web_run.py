"""Figures of the Run button (docs/web.md, "Running code"), in headless Chromium against
a running coderoom (``make run``, or any api URL):

    uv run python -m bench.web_run [http://127.0.0.1:8000] [--repeat 3]

For a JavaScript block and a Python block (the seeds ``array-methods`` and
``fizzbuzz-python``): the time from pressing Ctrl+Enter to the first output on the page,
first run (cold: sandbox frame, worker and for Python, Pyodide fetched and started) and
second run (warm), and the bytes the browser downloaded for the room plus one run, with
an empty cache and again with the cache of the first visit. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import urllib.request
from typing import Any

from tests.infra import find_chromium
from tests.web.browser import CHROMIUM_ARGS

SLUGS = {"JavaScript": "array-methods", "Python": "fizzbuzz-python"}


def _first_output_ms(page: Any) -> float:
    page.locator("#run-output").evaluate("el => { el.dataset.firstOutputMs = ''; }")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "() => document.querySelector('#run-output').dataset.firstOutputMs",
        timeout=180_000,
    )
    page.wait_for_selector(
        "#run-status:not([data-state=running]):not([data-state=loading])", timeout=180_000
    )
    return float(page.locator("#run-output").get_attribute("data-first-output-ms") or "nan")


def measure(pw: Any, base: str, block_id: str) -> dict[str, float]:
    # A profile of its own, as a real browser has: an incognito context's memory cache
    # would not keep Pyodide's 9.6 MB wasm, a disk cache does.
    with tempfile.TemporaryDirectory(prefix="coderoom-bench-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=find_chromium(), args=CHROMIUM_ARGS
        )
        try:
            return _measure(context, base, block_id)
        finally:
            context.close()


def _measure(context: Any, base: str, block_id: str) -> dict[str, float]:
    downloaded = [0]

    def count(request: Any) -> None:
        sizes = request.sizes()
        downloaded[0] += sizes["responseBodySize"] + sizes["responseHeadersSize"]

    context.on("requestfinished", count)
    page = context.new_page()
    page.goto(f"{base}/blocks/{block_id}?role=watcher")
    page.wait_for_selector("#role[data-role=watcher]")
    cold = _first_output_ms(page)
    warm = _first_output_ms(page)
    bytes_cold = downloaded[0]
    downloaded[0] = 0
    page.reload()
    page.wait_for_selector("#role[data-role=watcher]")
    _first_output_ms(page)
    bytes_cached = downloaded[0]
    return {"cold": cold, "warm": warm, "bytes_cold": bytes_cold, "bytes_cached": bytes_cached}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", nargs="?", default="http://127.0.0.1:8000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.base}/api/code-blocks") as r:
        blocks = {b["slug"]: b["id"] for b in json.load(r)}
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw:
        for language, slug in SLUGS.items():
            runs = [measure(pw, args.base, blocks[slug]) for _ in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append((language, med))
    print(f"medians of {args.repeat} fresh browser profiles\n")  # noqa: T201
    print(  # noqa: T201
        "| block | first output, cold | first output, warm | downloaded, cold | cached |\n"
        "|---|---|---|---|---|"
    )
    for language, m in rows:
        print(  # noqa: T201
            f"| {language} | {m['cold']:.0f} ms | {m['warm']:.0f} ms | "
            f"{m['bytes_cold'] / 1e6:.2f} MB | {m['bytes_cached'] / 1e3:.1f} kB |"
        )


if __name__ == "__main__":
    main()
