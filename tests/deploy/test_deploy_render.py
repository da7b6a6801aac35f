"""deploy/render.py: the kustomize subset the manifests use, with kustomize's results."""

from __future__ import annotations

import base64
import importlib.util
import textwrap
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@cache
def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coderoom_render", ROOT / "deploy/render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


DEPLOYMENT = """\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
            - name: web
              image: example/web:1.0
              args: ["a", "b"]
              env: [{name: A, value: "1"}]
              envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: sec}}]
            - name: sidecar
              image: busybox
          volumes: [{name: v, configMap: {name: cfg}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80}]
"""


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (hit,) = [r for r in resources if r["kind"] == kind]
    return hit


@pytest.mark.parametrize(
    ("kind", "name", "data", "suffix"),
    [
        # The names kustomize's own documentation prints for these generators.
        ("ConfigMap", "example-configmap-2", {"FOO": "Bar"}, "g2hdhfc6tk"),
        ("ConfigMap", "example-configmap-1", {"application.properties": "FOO=Bar\n"}, "8mbdf7882g"),
        (
            "Secret",
            "example-secret-1",
            {"password.txt": base64.b64encode(b"username=admin\npassword=secret\n").decode()},
            "t2kt65hgtb",
        ),
    ],
)
def test_hash_suffix_matches_kustomize(
    kind: str, name: str, data: dict[str, str], suffix: str
) -> None:
    res = {"kind": kind, "metadata": {"name": name}, "data": data}
    if kind == "Secret":
        res["type"] = "Opaque"
    assert renderer()._kustomize_hash(res) == suffix


def test_base_and_overlay(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "base/kustomization.yaml": """\
                resources: [app.yaml]
                labels:
                  - pairs: {part: x}
                    includeTemplates: true
                configMapGenerator:
                  - name: cfg
                    envs: [cfg.env]
                """,
            "base/cfg.env": "# comment\nA=1\nB=two=2\n",
            "base/app.yaml": DEPLOYMENT,
            "over/kustomization.yaml": """\
                namespace: ns
                resources: [../base]
                images:
                  - {name: example/web, newName: reg.example/web, newTag: "2.0"}
                replicas:
                  - {name: web, count: 3}
                configMapGenerator:
                  - name: cfg
                    behavior: merge
                    literals: [B=3, C=4]
                secretGenerator:
                  - name: sec
                    literals: [S=s3cret]
                patches:
                  - patch: |-
                      apiVersion: apps/v1
                      kind: Deployment
                      metadata: {name: web}
                      spec:
                        template:
                          spec:
                            containers:
                              - name: web
                                args: ["c"]
                                env: [{name: B, value: "2"}]
                              - name: sidecar
                                $patch: delete
                  - target: {kind: Service, name: web}
                    patch: |-
                      - {op: replace, path: /spec/ports/0/port, value: 8080}
                      - {op: add, path: /metadata/annotations, value: {a: b}}
                """,
        },
    )
    out = renderer().render(tmp_path / "over")
    assert [r["kind"] for r in out] == ["ConfigMap", "Secret", "Service", "Deployment"]
    config, secret, service, deployment = out
    assert config["data"] == {"A": "1", "B": "3", "C": "4"}
    assert config["metadata"]["name"].startswith("cfg-")
    assert renderer()._kustomize_hash({**config, "metadata": {"name": "cfg"}}) == (
        config["metadata"]["name"].removeprefix("cfg-")
    )
    assert "annotations" not in config["metadata"]
    assert base64.b64decode(secret["data"]["S"]) == b"s3cret"
    assert all(r["metadata"]["namespace"] == "ns" for r in out)
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["metadata"]["annotations"] == {"a": "b"}
    assert "replicas" not in service["spec"]
    assert service["spec"]["selector"] == {"app": "web"}
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app": "web"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "web", "part": "x"}
    assert deployment["metadata"]["labels"] == {"app": "web", "part": "x"}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == "reg.example/web:2.0"
    assert container["args"] == ["c"]
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert container["envFrom"] == [
        {"configMapRef": {"name": config["metadata"]["name"]}},
        {"secretRef": {"name": secret["metadata"]["name"]}},
    ]
    assert spec["template"]["spec"]["volumes"][0]["configMap"]["name"] == config["metadata"]["name"]


def test_content_change_renames(tmp_path: Path) -> None:
    names = []
    for value in ("1", "2"):
        write(
            tmp_path,
            {"kustomization.yaml": f"configMapGenerator: [{{name: c, literals: [A={value}]}}]\n"},
        )
        names.append(by_kind(renderer().render(tmp_path), "ConfigMap")["metadata"]["name"])
    assert names[0] != names[1]


def test_disable_hash(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "kustomization.yaml": """\
                generatorOptions: {disableNameSuffixHash: true}
                configMapGenerator: [{name: c, literals: [A=1]}]
                """
        },
    )
    assert by_kind(renderer().render(tmp_path), "ConfigMap")["metadata"] == {"name": "c"}


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ("resources: [missing.yaml]\n", "not found"),
        ("helmCharts: []\n", "unsupported fields"),
        ("labels: [{pairs: {a: b}, includeSelectors: true}]\n", "includeSelectors"),
        ("configMapGenerator: [{name: c, behavior: merge, literals: [A=1]}]\n", "unknown"),
        ("configMapGenerator: [{name: c, literals: [NOEQUALS]}]\n", "KEY=VALUE"),
        ("patches: [{patch: '[{op: add, path: /x, value: 1}]'}]\n", "needs a target"),
        (
            "patches: [{target: {kind: Nope}, patch: '[{op: add, path: /x, value: 1}]'}]\n",
            "matches",
        ),
    ],
)
def test_unsupported_or_wrong_is_an_error(tmp_path: Path, kustomization: str, message: str) -> None:
    write(tmp_path, {"kustomization.yaml": kustomization})
    with pytest.raises(renderer().RenderError, match=message):
        renderer().render(tmp_path)


def test_duplicate_resources_are_an_error(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"kustomization.yaml": "resources: [a.yaml, b.yaml]\n", "a.yaml": DEPLOYMENT},
    )
    (tmp_path / "b.yaml").write_text((tmp_path / "a.yaml").read_text())
    with pytest.raises(renderer().RenderError, match="duplicate"):
        renderer().render(tmp_path)


def test_cli_prints_the_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"kustomization.yaml": "configMapGenerator: [{name: c, literals: [A=1]}]\n"})
    assert renderer().main([str(tmp_path)]) == 0
    assert "kind: ConfigMap" in capsys.readouterr().out
    assert renderer().main([]) == 2
