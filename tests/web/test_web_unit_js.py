"""The browser code's pure parts (close-code table, control-event parsing, backoff,
lobby text), tested with node's test runner through `npm test` in web/."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.infra import ROOT, scaled

WEB = ROOT / "web"


def test_web_unit_tests_pass() -> None:
    npm = shutil.which("npm")
    if npm is None or not (WEB / "node_modules" / "esbuild").is_dir():
        pytest.skip("needs Node and web/node_modules (make web)")
    run = subprocess.run(
        [npm, "test", "--silent"],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout
