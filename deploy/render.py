"""Render coderoom's kustomize directories without a kustomize binary.

Implements only the subset of kustomize that ``deploy/k8s`` uses, with kustomize's
semantics, so that tests can validate exactly what ``kubectl apply -k`` would send:

- ``resources`` (files and directories holding a ``kustomization.yaml``)
- ``namespace``
- ``labels`` (``pairs``, ``includeTemplates``; ``includeSelectors`` is refused:
  selectors are written out in the base and never rewritten)
- ``commonAnnotations``
- ``images`` (``name``, ``newName``, ``newTag``, ``digest``)
- ``replicas`` (``name``, ``count``)
- ``patches`` (``path`` or ``patch``, optional ``target`` by kind/name): a strategic
  merge patch (maps merge; lists of named items merge by ``name``, ``containerPort``
  or ``port``; other lists are replaced; ``$patch: delete`` removes a named item)
  or a JSON 6902 patch (a YAML list of ``add``/``replace``/``remove`` operations)
- ``configMapGenerator`` / ``secretGenerator`` (``literals``, ``envs``, ``files``,
  ``behavior: create|merge|replace``, ``type``) and ``generatorOptions``
  (``disableNameSuffixHash``, ``labels``, ``annotations``): generated names get
  kustomize's content-hash suffix and every reference from a pod template
  (``envFrom``, ``env[].valueFrom``, ``volumes``) is rewritten to it.

Anything else in a kustomization is an error, not silently ignored.
Run ``python deploy/render.py deploy/k8s/overlays/dev`` to print the stream.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_HASH_ANNOTATION = "internal.coderoom/needs-hash"
_KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "patches",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "IngressClass",
    "PriorityClass",
}
_TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
_SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
_MERGE_KEYS = ("name", "containerPort", "port", "mountPath", "devicePath")


# kustomize's default ("legacy") output order: what `kubectl apply` must create first.
_ORDER_FIRST = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
]
_ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def _legacy_order(res: Resource) -> tuple[int, str, str, str]:
    kind = res["kind"]
    if kind in _ORDER_FIRST:
        rank = _ORDER_FIRST.index(kind)
    elif kind in _ORDER_LAST:
        rank = len(_ORDER_FIRST) + 1 + _ORDER_LAST.index(kind)
    else:
        rank = len(_ORDER_FIRST)
    meta = res["metadata"]
    return rank, f"{res['apiVersion']}/{kind}", meta.get("namespace", ""), meta["name"]


class RenderError(ValueError):
    """A kustomization uses something this renderer does not implement, or is wrong."""


def render(directory: str | Path) -> list[Resource]:
    """Return the resources ``kustomize build DIRECTORY`` would produce."""
    resources = _build(Path(directory))
    _apply_name_hashes(resources)
    return sorted(resources, key=_legacy_order)


def render_yaml(directory: str | Path) -> str:
    return yaml.safe_dump_all(render(directory), sort_keys=False, default_flow_style=False)


def _load_kustomization(directory: Path) -> dict[str, Any]:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            unknown = set(data) - _KNOWN_KEYS
            if unknown:
                raise RenderError(f"{path}: unsupported fields {sorted(unknown)}")
            return data
    raise RenderError(f"{directory}: no kustomization.yaml")


def _build(directory: Path) -> list[Resource]:
    kust = _load_kustomization(directory)
    resources: list[Resource] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(_build(path))
        elif path.is_file():
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        else:
            raise RenderError(f"{directory}: resource {entry!r} not found")
    _check_unique(resources)

    options = kust.get("generatorOptions", {})
    for spec in kust.get("configMapGenerator", []):
        _generate(resources, directory, spec, "ConfigMap", options)
    for spec in kust.get("secretGenerator", []):
        _generate(resources, directory, spec, "Secret", options)

    for patch in kust.get("patches", []):
        _apply_patch(resources, directory, patch)
    if "namespace" in kust:
        for res in resources:
            if res["kind"] not in _CLUSTER_SCOPED:
                res["metadata"]["namespace"] = kust["namespace"]
    for entry in kust.get("labels", []):
        if entry.get("includeSelectors"):
            raise RenderError("labels.includeSelectors is not supported (selectors are fixed)")
        for res in resources:
            _set_labels(res, entry["pairs"], entry.get("includeTemplates", False))
    annotations = kust.get("commonAnnotations", {})
    for res in resources:
        if annotations:
            res["metadata"].setdefault("annotations", {}).update(annotations)
    for image in kust.get("images", []):
        for res in resources:
            for container in _containers(res):
                _set_image(container, image)
    for rep in kust.get("replicas", []):
        hits = [
            r for r in resources if r["metadata"]["name"] == rep["name"] and r["kind"] in _SCALABLE
        ]
        if not hits:
            raise RenderError(f"{directory}: replicas target {rep['name']!r} not found")
        for res in hits:
            res["spec"]["replicas"] = rep["count"]
    _check_unique(resources)
    return resources


def _check_unique(resources: list[Resource]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for res in resources:
        key = (res["kind"], res["metadata"].get("namespace", ""), res["metadata"]["name"])
        if key in seen:
            raise RenderError(f"duplicate resource {key}")
        seen.add(key)


# --- generators ---------------------------------------------------------------------


def _parse_env_file(path: Path) -> dict[str, str]:
    data: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise RenderError(f"{path}:{number}: expected KEY=VALUE")
        data[key.strip()] = value
    return data


def _generator_data(directory: Path, spec: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = {}
    for env in spec.get("envs", []):
        data.update(_parse_env_file(directory / env))
    for item in spec.get("files", []):
        key, sep, rel = item.partition("=")
        if not sep:
            key, rel = Path(item).name, item
        data[key] = (directory / rel).read_text()
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise RenderError(f"{directory}: literal {literal!r} is not KEY=VALUE")
        data[key] = value
    return data


def _generate(
    resources: list[Resource],
    directory: Path,
    spec: dict[str, Any],
    kind: str,
    options: dict[str, Any],
) -> None:
    unknown = set(spec) - {"name", "behavior", "literals", "envs", "files", "type", "options"}
    if unknown:
        raise RenderError(f"{directory}: unsupported generator fields {sorted(unknown)}")
    data = _generator_data(directory, spec)
    if kind == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    opts = {**options, **spec.get("options", {})}
    behavior = spec.get("behavior", "create")
    existing = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == spec["name"]]
    if behavior in ("merge", "replace"):
        if not existing:
            raise RenderError(f"{directory}: {behavior} of unknown {kind} {spec['name']!r}")
        target = existing[0]
        target["data"] = {**target.get("data", {}), **data} if behavior == "merge" else data
        return
    if behavior != "create":
        raise RenderError(f"{directory}: unknown generator behavior {behavior!r}")
    if existing:
        raise RenderError(f"{directory}: {kind} {spec['name']!r} already exists")
    metadata: dict[str, Any] = {"name": spec["name"]}
    if opts.get("labels"):
        metadata["labels"] = dict(opts["labels"])
    annotations = dict(opts.get("annotations", {}))
    if not opts.get("disableNameSuffixHash"):
        annotations[_HASH_ANNOTATION] = "true"
    if annotations:
        metadata["annotations"] = annotations
    res: Resource = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    if kind == "Secret":
        res["type"] = spec.get("type", "Opaque")
    res["data"] = data
    resources.append(res)


def _kustomize_hash(res: Resource) -> str:
    """The 10-character suffix kustomize derives from a ConfigMap's or Secret's content."""
    if res["kind"] == "ConfigMap":
        doc: dict[str, Any] = {"kind": "ConfigMap", "name": res["metadata"]["name"]}
        doc["data"] = res.get("data", {})
    else:
        doc = {"kind": "Secret", "type": res.get("type", "Opaque")}
        doc["name"] = res["metadata"]["name"]
        doc["data"] = res.get("data", {})
    encoded = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    # Go's encoding/json escapes these; kustomize hashes Go's bytes.
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _apply_name_hashes(resources: list[Resource]) -> None:
    renames: dict[tuple[str, str], str] = {}
    for res in resources:
        annotations = res["metadata"].get("annotations", {})
        if annotations.pop(_HASH_ANNOTATION, None) is None:
            continue
        if not annotations:
            del res["metadata"]["annotations"]
        old = res["metadata"]["name"]
        new = f"{old}-{_kustomize_hash(res)}"
        res["metadata"]["name"] = new
        renames[(res["kind"], old)] = new
    if not renames:
        return
    for res in resources:
        spec = _pod_spec(res)
        if spec is None:
            continue
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                _rename(volume["configMap"], "name", "ConfigMap", renames)
            if "secret" in volume:
                _rename(volume["secret"], "secretName", "Secret", renames)
        for container in _containers(res):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    _rename(source["configMapRef"], "name", "ConfigMap", renames)
                if "secretRef" in source:
                    _rename(source["secretRef"], "name", "Secret", renames)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    _rename(ref["configMapKeyRef"], "name", "ConfigMap", renames)
                if "secretKeyRef" in ref:
                    _rename(ref["secretKeyRef"], "name", "Secret", renames)


def _rename(
    ref: dict[str, Any], field: str, kind: str, renames: dict[tuple[str, str], str]
) -> None:
    new = renames.get((kind, ref.get(field, "")))
    if new:
        ref[field] = new


# --- transformers ---------------------------------------------------------------------


def _pod_spec(res: Resource) -> dict[str, Any] | None:
    if res["kind"] == "Pod":
        return res.get("spec")
    if res["kind"] == "CronJob":
        return res["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if res["kind"] in _TEMPLATED:
        return res["spec"]["template"]["spec"]
    return None


def _containers(res: Resource) -> Iterator[dict[str, Any]]:
    spec = _pod_spec(res)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def _set_labels(res: Resource, pairs: dict[str, str], templates: bool) -> None:
    res["metadata"].setdefault("labels", {}).update(pairs)
    if templates and res["kind"] in _TEMPLATED:
        template = res["spec"]["template"].setdefault("metadata", {})
        template.setdefault("labels", {}).update(pairs)


def _set_image(container: dict[str, Any], image: dict[str, Any]) -> None:
    current = container.get("image", "")
    name, digest = current.split("@", 1) if "@" in current else (current, "")
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != image["name"]:
        return
    name = image.get("newName", name)
    if "digest" in image:
        container["image"] = f"{name}@{image['digest']}"
        return
    if "newTag" in image:
        tag, digest = str(image["newTag"]), ""
    container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# --- patches ---------------------------------------------------------------------------


def _apply_patch(resources: list[Resource], directory: Path, patch: dict[str, Any]) -> None:
    unknown = set(patch) - {"path", "patch", "target"}
    if unknown:
        raise RenderError(f"{directory}: unsupported patch fields {sorted(unknown)}")
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    body = yaml.safe_load(text)
    target = dict(patch.get("target", {}))
    if isinstance(body, list):
        if not target:
            raise RenderError(f"{directory}: a JSON 6902 patch needs a target")
        hits = _select(resources, target)
        for res in hits:
            _json6902(res, body)
        return
    if not target:
        target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    hits = _select(resources, target)
    for res in hits:
        merged = _strategic_merge(res, {k: v for k, v in body.items() if k != "apiVersion"})
        merged["metadata"]["name"] = res["metadata"]["name"]
        res.clear()
        res.update(merged)


def _select(resources: list[Resource], target: dict[str, Any]) -> list[Resource]:
    unknown = set(target) - {"kind", "name", "group", "version"}
    if unknown:
        raise RenderError(f"unsupported patch target fields {sorted(unknown)}")
    hits = [
        r
        for r in resources
        if ("kind" not in target or r["kind"] == target["kind"])
        and ("name" not in target or r["metadata"]["name"] == target["name"])
    ]
    if not hits:
        raise RenderError(f"patch target {target} matches nothing")
    return hits


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None


def _strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(base + patch)
        if key is None:
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, b in enumerate(out) if b.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    del out[index]
                continue
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = _strategic_merge(out[index], item)
        return out
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(res: Resource, ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = res
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[index]
            else:
                raise RenderError(f"unsupported JSON patch op {kind!r}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in node:
                raise RenderError(f"replace of missing path {op['path']!r}")
            node[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[last]
        else:
            raise RenderError(f"unsupported JSON patch op {kind!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: render.py KUSTOMIZATION_DIR\n")
        return 2
    sys.stdout.write(render_yaml(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
