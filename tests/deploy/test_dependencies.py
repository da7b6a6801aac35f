"""What pyproject.toml declares against what the code imports, the lock file holds and the
images install.

- Every third-party package the services import is a direct dependency (hiredis was
  only reached through `redis[hiredis]`).
- The embedded servers (mongoeco, fakeredis) are the `embedded` extra: `make run`,
  `make test` (hence .ci/run) install it; no image build does.
- Floors are the versions the lock file holds: nothing claims support for a minor
  version the tests never ran against.
- websockets has an upper bound (the gateway subclasses its internals).
- No mypy override hides the types of a package that ships them (py.typed).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXTRA = "embedded"
EMBEDDED = {"mongoeco", "fakeredis"}


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def locked() -> dict[str, Version]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {canonicalize_name(p["name"]): Version(p["version"]) for p in lock["package"]}


def requirements(group: str | None = None) -> dict[str, Requirement]:
    project = pyproject()["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


def imported_top_modules(folder: Path) -> dict[str, set[Path]]:
    """Top-level module names imported anywhere under `folder`, with the files."""
    found: dict[str, set[Path]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.relative_to(ROOT))
    return found


def test_every_imported_package_is_declared_directly() -> None:
    distributions = importlib.metadata.packages_distributions()
    runtime = set(requirements())
    embedded = set(requirements(EXTRA))
    for folder in ("shared", "services"):
        for module, files in imported_top_modules(ROOT / folder).items():
            if module in sys.stdlib_module_names or module in ("shared", "services"):
                continue
            assert module in distributions, f"{module} (imported by {files}) is not installed"
            names = {canonicalize_name(d) for d in distributions[module]}
            if files == {Path("services/embedded.py")}:
                assert names & (runtime | embedded), (module, names)
            else:
                assert names & runtime, (
                    f"{module} is imported by {sorted(map(str, files))} but {names} is not "
                    "in [project] dependencies"
                )


def test_the_embedded_servers_are_an_extra_not_a_runtime_dependency() -> None:
    assert EMBEDDED.isdisjoint(requirements())
    assert set(requirements(EXTRA)) == EMBEDDED
    assert "lua" in requirements(EXTRA)["fakeredis"].extras  # the gateway's scripts


def test_make_run_and_test_install_the_extra_and_ci_goes_through_make() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = dict(re.findall(r"^([a-z-]+):.*?\n((?:\t.*\n)+)", makefile, re.M))
    extra_var = re.search(r"^DEV = (.*)$", makefile, re.M)
    assert extra_var and f"--extra {EXTRA}" in extra_var.group(1)
    for target in ("sync", "run", "test"):
        assert "$(DEV)" in targets[target], (target, targets[target])
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)


def test_no_image_installs_the_extra() -> None:
    for name in ("Dockerfile", "Tiltfile"):
        lines = (ROOT / name).read_text().splitlines()
        syncs = [ln for ln in lines if "uv sync" in ln and not ln.lstrip().startswith("#")]
        assert syncs, name
        for line in syncs:
            assert "--extra" not in line and "--all-extras" not in line, (name, line)
            assert "--no-dev" in line, (name, line)


@pytest.mark.parametrize("group", [None, EXTRA])
def test_floors_are_the_locked_versions(group: str | None) -> None:
    for name, req in requirements(group).items():
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(floors) == 1, f"{req} has no single >= floor"
        floor, tested = floors[0], locked()[name]
        assert floor <= tested and floor.release[:2] == tested.release[:2], (
            f"{req}: the lock file (what the tests run) holds {tested}"
        )


def test_websockets_has_an_upper_bound_that_admits_the_locked_version() -> None:
    req = requirements()["websockets"]
    assert any(s.operator == "<" for s in req.specifier), req
    assert req.specifier.contains(locked()["websockets"])


def test_no_mypy_override_hides_shipped_types() -> None:
    for override in pyproject()["tool"]["mypy"].get("overrides", []):
        if not override.get("ignore_missing_imports"):
            continue
        modules = override["module"]
        for module in [modules] if isinstance(modules, str) else modules:
            top = module.split(".")[0]
            dists = importlib.metadata.packages_distributions().get(top, [])
            for dist in dists:
                files = importlib.metadata.files(dist) or []
                assert not any(f.name == "py.typed" for f in files), (
                    f"{dist} ships types (py.typed): drop the mypy override for {module}"
                )
