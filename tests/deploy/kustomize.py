"""The manifests as the cluster gets them: rendered by the real tool, `kubectl kustomize`
(kustomize v5, what `kubectl apply -k` runs), never by a re-implementation.

Without kubectl (or with a kustomize older than v5) the tests that need a rendering are
skipped with the reason; under CI (the ``CI`` variable set) that is a failure instead.
.ci/run installs kubectl when it is missing.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

MIN_KUSTOMIZE = (5, 0)

Resource = dict[str, Any]


@cache
def _kubectl() -> tuple[str | None, str]:
    """(kubectl's path, "") when it can render, else (None, why not)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None, "kubectl is not on PATH"
    result = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Kustomize Version: v(\d+)\.(\d+)", result.stdout)
    if found is None:
        return None, f"`kubectl version --client` names no kustomize: {result.stdout!r}"
    if (int(found[1]), int(found[2])) < MIN_KUSTOMIZE:
        return None, f"kubectl's kustomize is v{found[1]}.{found[2]}, older than v5"
    return kubectl, ""


def kubectl() -> str:
    """kubectl's path; skips the test (fails it under CI) when it cannot render."""
    path, why = _kubectl()
    if path is None:
        message = f"{why}: the manifests cannot be rendered (kubectl kustomize, kustomize v5)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@cache
def render_yaml(tree: Path) -> str:
    """The YAML stream `kubectl kustomize <tree>` prints."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(tree)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {tree} failed:\n{result.stderr}"
    return result.stdout


@cache
def _render(tree: Path) -> tuple[Resource, ...]:
    return tuple(doc for doc in yaml.safe_load_all(render_yaml(tree)) if doc)


def render(tree: Path) -> list[Resource]:
    """The resources of `tree`, rendered (a fresh copy the caller may change)."""
    return copy.deepcopy(list(_render(tree)))
