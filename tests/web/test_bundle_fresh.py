"""The committed bundle in services/api/static/ is the build of the current web/ sources.

build.mjs writes build-info.json with a sha256 over web/src/**, package.json,
package-lock.json and build.mjs (content, not mtime: git does not keep mtimes).
If this fails: `make web` and commit services/api/static/.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
STATIC = ROOT / "services" / "api" / "static"


def source_hash() -> str:
    """Same algorithm as sourceHash() in web/build.mjs."""
    files = [p for p in (WEB / "src").rglob("*") if p.is_file()]
    files += [WEB / "package.json", WEB / "package-lock.json", WEB / "build.mjs"]
    digest = hashlib.sha256()
    for rel in sorted(p.relative_to(WEB).as_posix() for p in files):
        content = hashlib.sha256((WEB / rel).read_bytes()).hexdigest()
        digest.update(f"{rel}\n{content}\n".encode())
    return digest.hexdigest()


def build_info() -> dict[str, object]:
    info = json.loads((STATIC / "build-info.json").read_text())
    assert isinstance(info, dict)
    return info


def test_bundle_is_built_from_current_sources() -> None:
    assert build_info()["sourceHash"] == source_hash(), (
        "services/api/static/ is stale: run `make web` and commit services/api/static/"
    )


def test_bundle_files_are_the_ones_built() -> None:
    assets = build_info()["assets"]
    assert isinstance(assets, dict)
    for name, digest in assets.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    chunks = {f"chunks/{p.name}" for p in (STATIC / "chunks").iterdir()}
    assert chunks == {n for n in assets if n.startswith("chunks/")}, "stray or missing chunks"


def test_shell_names_the_current_version_and_has_no_inline_script() -> None:
    html = (STATIC / "index.html").read_text()
    version = build_info()["version"]
    assert f"/static/app.js?v={version}" in html
    assert f"/static/app.css?v={version}" in html
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert scripts and all(not body.strip() for body in scripts), "inline script in the shell"
    assert "http://" not in html and "https://" not in html, "external reference in the shell"


def test_bundle_makes_no_external_requests() -> None:
    # No CDN, no web fonts: every URL the bundle could fetch is relative or a websocket.
    for path in [STATIC / "app.css", *STATIC.glob("**/*.js")]:
        text = path.read_text()
        assert not re.search(r"url\(\s*['\"]?https?:", text), path.name
        assert "@import" not in text, path.name
        assert not re.search(r"fetch\(\s*['\"`]https?:", text), path.name


PYODIDE_FILES = ["pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]


def test_vendored_pyodide_is_the_locked_version_unchanged() -> None:
    # The files in static/pyodide/ are copied by build.mjs from the npm package that
    # web/package-lock.json pins; their sha256 are in build-info.json (checked above).
    lock = json.loads((WEB / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/pyodide"]["version"]
    info = build_info()
    assert info["pyodide"] == locked
    assets = info["assets"]
    assert isinstance(assets, dict)
    assert sorted(p.name for p in (STATIC / "pyodide").iterdir()) == sorted(PYODIDE_FILES)
    for name in PYODIDE_FILES:
        assert f"pyodide/{name}" in assets
    lockfile = json.loads((STATIC / "pyodide" / "pyodide-lock.json").read_text())
    assert lockfile["info"]["arch"] == "wasm32"
    assert f'"{locked}"'.encode() in (STATIC / "pyodide" / "pyodide.asm.mjs").read_bytes()
    # The sandbox bundle carries Pyodide's loader without its CDN default.
    runner = (STATIC / "runner.js").read_text()
    assert "jsdelivr" not in runner and "cdn." not in runner
    total = sum((STATIC / "pyodide" / n).stat().st_size for n in PYODIDE_FILES)
    assert total < 16_000_000, f"vendored Pyodide grew to {total} bytes"
