"""The Dockerfile, its .dockerignore, and the Tiltfile with tilt.json.

No Docker engine, hadolint or Tilt binary here: the Dockerfile is parsed into stages
and checked structurally, and the Tiltfile (Starlark, a subset of Python syntax) is
run against stand-ins for Tilt's builtins that record what it asks Tilt to do.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import render_yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "-dev ", "cargo", "rustc")

# --- Dockerfile -------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [rest for kind, rest in self.instructions if kind == instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        kind, _, rest = line.partition(" ")
        kind = kind.upper()
        if kind == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)),
                words[0],
            )
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert kind == "ARG", f"only ARG may precede FROM, not {kind}"
            key, _, value = rest.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append((kind, rest))
    return global_args, stages


@cache
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())[1]


def root_image(stage: Stage) -> str:
    names = {s.name: s for s in stages() if s.name}
    while stage.base in names:
        stage = names[stage.base]
    return stage.base


def test_parser_reads_stages_and_continuations() -> None:
    args, parsed = parse_dockerfile(
        "# c\nARG IMG=python:3.13-slim\nFROM ${IMG} AS a\nRUN one \\\n    two\n"
        "FROM a AS b\nUSER 1\n"
    )
    assert args == {"IMG": "python:3.13-slim"}
    assert [(s.base, s.name) for s in parsed] == [("python:3.13-slim", "a"), ("a", "b")]
    assert parsed[0].args("RUN") == ["one two"]


def test_final_stage_is_slim_python_and_non_root() -> None:
    final = stages()[-1]
    assert final.base == "python:3.13-slim"
    users = final.args("USER")
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) == 10001
    envs = " ".join(final.args("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in envs and "PYTHONUNBUFFERED=1" in envs
    entrypoint = json.loads(final.args("ENTRYPOINT")[-1])
    assert entrypoint == ["coderoom"]
    assert json.loads(final.args("CMD")[-1]) in (["api"], ["gateway"])


def test_final_stage_has_no_build_tools_and_no_package_manager_runs() -> None:
    final = stages()[-1]
    for run in final.args("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
        for tool in BUILD_TOOLS:
            assert tool not in run + " ", (tool, run)
    copied_from = {
        word.split("=", 1)[1]
        for copy_args in final.args("COPY")
        for word in copy_args.split()
        if word.startswith("--from=")
    }
    # Only the builder's results are copied in; uv stays behind.
    assert all(not root_image(s).startswith("ghcr.io/astral-sh/uv") for s in stages())
    for rest in final.args("COPY"):
        assert "/uv" not in rest.split()[-1], rest
    assert copied_from <= {s.name for s in stages()[:-1]}


def test_no_healthcheck() -> None:
    for stage in stages():
        assert not stage.args("HEALTHCHECK"), "Kubernetes probes do health checking"


def test_dependencies_come_from_the_lock_file() -> None:
    runs = [r for s in stages() for r in s.args("RUN")]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs
    for run in syncs:
        assert "--frozen" in run and "--no-dev" in run, run
    copies = " ".join(c for s in stages() for c in s.args("COPY"))
    assert "uv.lock" in copies
    assert not any("pip install" in r and "uv==" not in r for r in runs)


def test_every_stage_is_pinned_to_a_named_base() -> None:
    for stage in stages():
        image = root_image(stage)
        assert ":" in image and not image.endswith(":latest"), image


def test_dev_stage_exists_for_tilt_and_is_not_the_default() -> None:
    names = [s.name for s in stages()]
    assert "dev" in names and names[-1] != "dev"


# --- .dockerignore ----------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negate, re.compile(regex + "$")))
    return rules


def in_context(path: str) -> bool:
    """Whether Docker sends PATH to the builder (last matching rule wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, regex in _ignore_rules():
        if any(regex.match(p) for p in prefixes):
            included = negate
    return included


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "services/cli.py",
        "services/api/static/index.html",
        "shared/settings.py",
        "seeds/blocks.yaml",
    ],
)
def test_dockerignore_keeps_what_the_image_needs(path: str) -> None:
    assert in_context(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "node_modules/x/index.js",
        "web/node_modules/yjs/package.json",
        "web/src/main.ts",
        "tests/deploy/test_deploy_manifests.py",
        "var/mongo/data.bin",
        "services/__pycache__/cli.cpython-313.pyc",
        "shared/__pycache__/settings.cpython-313.pyc",
        "deploy/k8s/base/api.yaml",
        "bench/results/x.json",
        "Dockerfile",
    ],
)
def test_dockerignore_drops_the_rest(path: str) -> None:
    assert not in_context(path)


def test_copied_sources_exist_and_are_in_the_context() -> None:
    for stage in stages():
        for rest in stage.args("COPY"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(rest)):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), source
                assert in_context(source.rstrip("/")), source


# --- Tilt -------------------------------------------------------------------------------


def tilt_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((ROOT / "tilt.json").read_text())
    return config


@dataclass
class TiltRun:
    """What a Tiltfile asked Tilt to do."""

    images: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    local: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_tiltfile(config: dict[str, Any]) -> TiltRun:
    """Execute the Tiltfile with recording stand-ins for the Tilt builtins it uses."""
    out = TiltRun()
    namespace: dict[str, Any] = {}

    def load(module: str, *names: str) -> None:
        assert module == "ext://restart_process"
        for name in names:
            assert name == "docker_build_with_restart"
            namespace[name] = docker_build_with_restart

    def read_json(path: str) -> dict[str, Any]:
        assert path == "tilt.json"
        return copy.deepcopy(config)

    def docker_build_with_restart(ref: str, context: str, **kwargs: Any) -> None:
        out.images.append({"ref": ref, "context": context, **kwargs})

    def sync(local: str, remote: str) -> tuple[str, str, str]:
        return ("sync", local, remote)

    def run(cmd: str, trigger: list[str] | None = None) -> tuple[str, str, list[str]]:
        return ("run", cmd, trigger or [])

    def kustomize(path: str) -> str:
        return render_yaml(ROOT / path)

    def decode_yaml_stream(text: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(text) if d]

    def encode_yaml_stream(objects: list[dict[str, Any]]) -> str:
        return yaml.safe_dump_all(objects)

    def k8s_yaml(text: str) -> None:
        out.objects.extend(decode_yaml_stream(text))

    def k8s_resource(workload: str = "", new_name: str = "", **kwargs: Any) -> None:
        name = new_name or workload
        assert name not in out.resources, f"k8s_resource({name!r}) twice"
        out.resources[name] = {"workload": workload, **kwargs}

    def port_forward(local: int, container: int, name: str = "") -> tuple[int, int]:
        return (local, container)

    def local_resource(name: str, **kwargs: Any) -> None:
        out.local[name] = kwargs

    namespace.update(
        load=load,
        read_json=read_json,
        sync=sync,
        run=run,
        kustomize=kustomize,
        decode_yaml_stream=decode_yaml_stream,
        encode_yaml_stream=encode_yaml_stream,
        k8s_yaml=k8s_yaml,
        k8s_resource=k8s_resource,
        port_forward=port_forward,
        local_resource=local_resource,
    )
    source = (ROOT / "Tiltfile").read_text()
    exec(compile(source, "Tiltfile", "exec"), namespace)
    return out


def test_tiltfile_is_starlark_shaped() -> None:
    tree = ast.parse((ROOT / "Tiltfile").read_text())
    banned = (ast.JoinedStr, ast.While, ast.Try, ast.ClassDef, ast.Import, ast.ImportFrom)
    for node in ast.walk(tree):
        assert not isinstance(node, banned), f"not Starlark: {type(node).__name__}"


def test_tilt_json_has_every_key_the_tiltfile_reads() -> None:
    config = tilt_config()
    text = (ROOT / "Tiltfile").read_text()
    keys = re.findall(r"cfg\[\"(\w+)\"\]", text)
    assert keys, "the Tiltfile reads tilt.json through cfg[...]"
    for key in keys:
        assert key in config, key
    # Nested reads through the aliases the Tiltfile gives them.
    aliases = dict(re.findall(r"^(\w+) = cfg\[\"(\w+)\"\]$", text, flags=re.M))
    for alias, key in aliases.items():
        for sub in re.findall(rf"\b{alias}\[\"(\w+)\"\]", text):
            assert sub in config[key], f"tilt.json {key}.{sub}"


def test_tilt_json_values() -> None:
    config = tilt_config()
    assert config["replicas"]["api"] >= 1 and config["replicas"]["gateway"] >= 2
    assert (ROOT / config["overlay"] / "kustomization.yaml").is_file()
    assert all(isinstance(p, int) and 0 < p < 65536 for p in config["ports"].values())


@pytest.mark.parametrize("ingress", [False, True])
def test_tiltfile_builds_deploys_and_groups(ingress: bool) -> None:
    config = tilt_config()
    config["ingress"]["enabled"] = ingress
    config["replicas"] = {"api": 1, "gateway": 3}
    config["namespace"] = "someone-else"
    tilt = run_tiltfile(config)

    (image,) = tilt.images
    assert image["ref"] == config["image"] and image["target"] == "dev"
    assert image["target"] in [s.name for s in stages()]
    steps = image["live_update"]
    synced = {(s[1], s[2]) for s in steps if s[0] == "sync"}
    assert ("services", "/app/services") in synced and ("shared", "/app/shared") in synced
    for local, _ in synced:
        assert (ROOT / local).exists() and in_context(local)
    (rerun,) = [s for s in steps if s[0] == "run"]
    assert "uv sync --frozen" in rerun[1] and set(rerun[2]) == {"pyproject.toml", "uv.lock"}

    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in tilt.objects}
    for obj in tilt.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "someone-else"
    assert by_kind[("Deployment", "api")]["spec"]["replicas"] == 1
    assert by_kind[("Deployment", "gateway")]["spec"]["replicas"] == 3
    assert by_kind[("HorizontalPodAutoscaler", "gateway")]["spec"]["minReplicas"] == 3

    workloads = {
        o["metadata"]["name"]
        for o in tilt.objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    }
    named = {f"{o['metadata']['name']}:{o['kind'].lower()}" for o in tilt.objects}
    for name, resource in tilt.resources.items():
        assert resource["workload"] in workloads or (not resource["workload"] and name)
        assert resource.get("labels"), f"{name} is not grouped"
        for selector in resource.get("objects", []):
            assert selector in named, selector
        for dep in resource.get("resource_deps", []):
            assert dep in tilt.resources
    assert workloads <= set(tilt.resources)
    grouped = {s for r in tilt.resources.values() for s in r.get("objects", [])}
    for obj in tilt.objects:
        if obj["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"):
            assert f"{obj['metadata']['name']}:{obj['kind'].lower()}" in grouped

    api = by_kind[("Deployment", "api")]["spec"]["template"]["spec"]["containers"][0]
    gateway = by_kind[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]
    forwards = {
        name: r.get("port_forwards", []) for name, r in tilt.resources.items() if r["workload"]
    }
    if ingress:
        assert "ingress-port-forward" in tilt.local
        assert str(config["ports"]["ingress"]) in tilt.local["ingress-port-forward"]["serve_cmd"]
        assert not forwards["api"] and not forwards["gateway"]
    else:
        assert forwards["api"] == [(config["ports"]["api"], 8000)]
        assert forwards["gateway"] == [(config["ports"]["gateway"], 8001)]
        env = {e["name"]: e.get("value") for e in api["env"]}
        assert env["GATEWAY_URLS"] == f"ws://localhost:{config['ports']['gateway']}/ws/rooms"
        env = {e["name"]: e.get("value") for e in gateway["env"]}
        assert f"http://localhost:{config['ports']['api']}" in env["ALLOWED_ORIGINS"].split(",")
    # Live update writes into /app, so only under Tilt is the root fs writable.
    assert api["securityContext"]["readOnlyRootFilesystem"] is False
