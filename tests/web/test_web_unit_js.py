"""The browser code's pure parts (close-code table, control-event parsing, backoff,
lobby text), tested with node's test runner through `npm test` in web/."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.infra import ROOT, scaled, tool_missing

WEB = ROOT / "web"


def test_web_unit_tests_pass() -> None:
    npm = shutil.which("npm")
    if npm is None or not (WEB / "node_modules" / "esbuild").is_dir():
        tool_missing("needs Node and web/node_modules (make web)")
    run = subprocess.run(
        [npm, "test", "--silent"],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # "# fail 0" alone is also what a run of no test at all prints.
    summary = dict(re.findall(r"^# (pass|fail) (\d+)$", run.stdout, re.MULTILINE))
    assert summary.get("fail") == "0", run.stdout[-4000:]
    assert int(summary.get("pass", "0")) > 0, run.stdout[-4000:]
