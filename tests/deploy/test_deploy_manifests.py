"""The Kubernetes manifests: schema-valid, linted, secure, and wired to real settings.

Every tree is rendered with `kubectl kustomize` (tests/deploy/kustomize.py) and
checked as the cluster would receive it.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings, load_settings
from tests.deploy import kustomize

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TREES = ["base", "overlays/dev", "overlays/prod", "overlays/prod-cluster"]
OVERLAYS = ["overlays/dev", "overlays/prod", "overlays/prod-cluster"]
# Oldest Kubernetes we promise, and a current one.
K8S_VERSIONS = ["1.30", "1.34"]
SETTINGS = {name.upper() for name in Settings.model_fields}
APP_IMAGE = "coderoom"
# Settings a process cannot do its job without (the defaults point at 127.0.0.1).
REQUIRED = {
    "api": {"MONGODB_URL", "REDIS_URL"},
    "gateway": {"MONGODB_URL", "REDIS_URL", "TOKEN_SECRET"},
    "seed": {"MONGODB_URL"},
}
PRESTOP_MARGIN_SECONDS = 5

Resource = dict[str, Any]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def rendered(tree: str) -> list[Resource]:
    return kustomize.render(K8S / tree)


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    hits = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def pod_spec(res: Resource) -> dict[str, Any] | None:
    if res["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        spec: dict[str, Any] = res["spec"]["template"]["spec"]
        return spec
    return None


def containers(resources: list[Resource]) -> Iterator[tuple[Resource, dict[str, Any]]]:
    for res in resources:
        spec = pod_spec(res)
        if spec is not None:
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield res, container


def is_app(container: dict[str, Any]) -> bool:
    image: str = container["image"]
    return image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] == APP_IMAGE


def effective_env(
    resources: list[Resource], container: dict[str, Any], partial: bool = False
) -> dict[str, str]:
    """The container's environment as the kubelet builds it (sources, then env).

    ``partial`` skips sources the tree does not define (the base has no Secret).
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key not in source:
                continue
            name = source[key]["name"]
            hits = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
            if not hits and partial:
                continue
            data = find(resources, kind, name).get("data", {})
            if kind == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            env.update(data)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "gateway-5d8f7c9b6-x2x7q"
        else:
            raise AssertionError(f"unexpected env source {item}")
    return env


def role(container: dict[str, Any]) -> str:
    return str(container["args"][0])


# --- schema and lint ------------------------------------------------------------------


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@cache
def _bundled_schema_versions() -> list[str]:
    """Kubernetes versions whose strict schemas kubernetes-validate ships."""
    from importlib.resources import files

    schemas = files("kubernetes_validate") / "kubernetes-json-schema"
    names = [p.name for p in schemas.iterdir() if p.name.endswith("-local-strict")]
    versions = [n.removeprefix("v").removesuffix("-local-strict") for n in names]
    return sorted(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("tree", TREES)
def test_kubernetes_validate_strict(tree: str, version: str, tmp_path: Path) -> None:
    bundled = [v for v in _bundled_schema_versions() if v.startswith(version + ".")]
    if not bundled:
        older = [v for v in _bundled_schema_versions() if _minor(v) <= _minor(version)]
        nearest = older or _bundled_schema_versions()
        pytest.skip(
            f"kubernetes-validate bundles no schemas for {version} "
            f"(nearest bundled: {nearest[-1] if nearest else 'none'}); not validated"
        )
    stream = tmp_path / "rendered.yaml"
    stream.write_text(kustomize.render_yaml(K8S / tree))
    result = subprocess.run(
        [_bin("kubernetes-validate"), "--strict", "-k", bundled[0], str(stream)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for res in rendered(tree):
        line = f"passed for resource {res['kind'].lower()}/{res['metadata']['name']} "
        assert line + f"against version {version}" in result.stdout, result.stdout


def test_yamllint_strict() -> None:
    result = subprocess.run(
        [_bin("yamllint"), "-c", "deploy/.yamllint", "--strict", "deploy/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_relaxes_only_line_length() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "deploy/.yamllint").read_text())
    assert config == {"extends": "default", "rules": {"line-length": "disable"}}


@pytest.mark.parametrize("tree", OVERLAYS)
def test_references_resolve(tree: str) -> None:
    resources = rendered(tree)
    for _, container in containers(resources):
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    find(resources, kind, source[key]["name"])
    for res in resources:
        if res["kind"] == "Ingress":
            for rule in res["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    service = find(resources, "Service", path["backend"]["service"]["name"])
                    names = {p["name"] for p in service["spec"]["ports"]}
                    assert path["backend"]["service"]["port"]["name"] in names
        if res["kind"] == "HorizontalPodAutoscaler":
            find(
                resources,
                res["spec"]["scaleTargetRef"]["kind"],
                res["spec"]["scaleTargetRef"]["name"],
            )


@pytest.mark.parametrize("tree", TREES)
def test_services_and_budgets_select_their_pods(tree: str) -> None:
    resources = rendered(tree)
    workloads = [r for r in resources if r["kind"] in ("Deployment", "StatefulSet")]
    for res in resources:
        if res["kind"] == "Service":
            selector = res["spec"]["selector"]
        elif res["kind"] == "PodDisruptionBudget":
            selector = res["spec"]["selector"]["matchLabels"]
        else:
            continue
        targets = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"{res['kind']}/{res['metadata']['name']} selects {targets}"
        if res["kind"] == "Service":
            pod = pod_spec(targets[0])
            assert pod is not None
            ports = {p["name"] for c in pod["containers"] for p in c["ports"]}
            for port in res["spec"]["ports"]:
                assert port["targetPort"] in ports
            assert res["spec"].get("sessionAffinity", "None") == "None"
    for res in workloads:
        labels = res["spec"]["template"]["metadata"]["labels"]
        assert res["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("tree", TREES)
def test_recommended_labels(tree: str) -> None:
    for res in rendered(tree):
        if res["kind"] in ("Namespace", "ConfigMap", "Secret"):
            continue
        labels = res["metadata"]["labels"]
        for key in ("name", "component", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (res["kind"], res["metadata"]["name"])
        assert labels["app.kubernetes.io/part-of"] == "coderoom"
        if pod_spec(res) is not None:
            template = res["spec"]["template"]["metadata"]["labels"]
            assert labels.items() <= template.items()


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_every_key_is_a_setting(tree: str) -> None:
    resources = rendered(tree)
    for res in resources:
        if res["kind"] in ("ConfigMap", "Secret") and res["metadata"]["name"].startswith(
            "coderoom-"
        ):
            assert set(res.get("data", {})) <= SETTINGS, res["metadata"]["name"]
    for _, container in containers(resources):
        if is_app(container):
            names = {item["name"] for item in container.get("env", [])}
            assert names <= SETTINGS, names - SETTINGS


@pytest.mark.parametrize("tree", OVERLAYS)
def test_app_containers_get_valid_complete_settings(
    tree: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    resources = rendered(tree)
    seen = set()
    for _, container in containers(resources):
        if not is_app(container):
            continue
        seen.add(role(container))
        env = effective_env(resources, container)
        assert set(env) <= SETTINGS
        missing = {k for k in REQUIRED[role(container)] if not env.get(k)}
        assert not missing, f"{tree} {role(container)} lacks {missing}"
        # Builds, i.e. every value passes the settings' own validation.
        load_settings(**{k.lower(): v for k, v in env.items()})
    assert seen == {"api", "gateway", "seed"}


@pytest.mark.parametrize("tree", OVERLAYS)
def test_gateway_and_api_specific_env(tree: str) -> None:
    resources = rendered(tree)
    gateway = find(resources, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    env = effective_env(resources, gateway)
    assert env["TRUST_PROXY_HEADERS"] == "true"
    assert env["PORT"] == "8001" and env["HOST"] == "0.0.0.0"
    gateway_id = next(e for e in gateway["env"] if e["name"] == "GATEWAY_ID")
    assert gateway_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    origins = set(load_settings(allowed_origins=env["ALLOWED_ORIGINS"]).allowed_origins)
    for ingress in (r for r in resources if r["kind"] == "Ingress"):
        tls_hosts = {h for t in ingress["spec"].get("tls", []) for h in t["hosts"]}
        for rule in ingress["spec"]["rules"]:
            scheme = "https" if rule["host"] in tls_hosts else "http"
            assert f"{scheme}://{rule['host']}" in origins
    api = find(resources, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    env = effective_env(resources, api)
    assert env["GATEWAY_URLS"] == "" and env["PORT"] == "8000"


def test_dev_uses_in_cluster_replica_set() -> None:
    resources = rendered("overlays/dev")
    gateway = find(resources, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    env = effective_env(resources, gateway)
    assert env["MONGODB_URL"] == "mongodb://mongodb-0.mongodb:27017/?replicaSet=rs0"
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    mongo = find(resources, "StatefulSet", "mongodb")
    assert mongo["spec"]["serviceName"] == "mongodb"
    args = mongo["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--replSet") + 1] == "rs0"
    assert mongo["spec"]["template"]["spec"]["containers"][0]["image"].startswith("mongo:7")
    probe = mongo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]
    script = probe["command"][-1]
    assert "rs.initiate" in script and "mongodb-0.mongodb:27017" in script
    service = find(resources, "Service", "mongodb")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    for name in ("mongodb", "redis"):
        assert find(resources, "StatefulSet", name)["spec"]["volumeClaimTemplates"]


def test_prod_cluster_points_every_service_at_a_redis_cluster() -> None:
    """overlays/prod-cluster: the api, the gateways and the seed job all read the cluster
    settings from the one ConfigMap (REDIS_URL, from the Secret, is a seed node)."""
    resources = rendered("overlays/prod-cluster")
    config = next(r for r in resources if r["kind"] == "ConfigMap")
    assert config["data"]["REDIS_CLUSTER"] == "true"
    assert config["data"]["REDIS_CLUSTER_NODES"]
    settings = load_settings(
        redis_url="rediss://:pw@seed.example.net:6380/0",
        redis_cluster=config["data"]["REDIS_CLUSTER"],
        redis_cluster_nodes=config["data"]["REDIS_CLUSTER_NODES"],
    )
    assert settings.redis_cluster and len(settings.redis_cluster_nodes) == 2
    for kind in ("Deployment", "Job"):
        for workload in (r for r in resources if r["kind"] == kind):
            for container in workload["spec"]["template"]["spec"]["containers"]:
                refs = [
                    e["configMapRef"]["name"]
                    for e in container.get("envFrom", [])
                    if "configMapRef" in e
                ]
                assert refs == [config["metadata"]["name"]], workload["metadata"]["name"]


def test_prod_secret_holds_only_marked_placeholders() -> None:
    resources = rendered("overlays/prod")
    secrets = [r for r in resources if r["kind"] == "Secret"]
    assert len(secrets) == 1
    data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
    assert set(data) == {"MONGODB_URL", "REDIS_URL", "TOKEN_SECRET", "ADMIN_TOKEN"}
    for key, value in data.items():
        assert "CHANGE_ME" in value, f"{key} in deploy/k8s/overlays/prod/secrets.env looks real"
    config = next(r for r in resources if r["kind"] == "ConfigMap")
    assert not set(config["data"]) & {"MONGODB_URL", "REDIS_URL", "TOKEN_SECRET", "ADMIN_TOKEN"}
    assert {"app.kubernetes.io/part-of"} <= set(config["metadata"]["labels"])


# --- pods -------------------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_every_container_is_locked_down(tree: str) -> None:
    resources = rendered(tree)
    checked = 0
    for res, container in containers(resources):
        where = f"{tree} {res['kind']}/{res['metadata']['name']}:{container['name']}"
        pod = pod_spec(res)
        assert pod is not None
        ctx = container.get("securityContext", {})
        assert ctx.get("runAsNonRoot") is True, where
        assert ctx.get("readOnlyRootFilesystem") is True, where
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
        seccomp = ctx.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile")
        assert seccomp == {"type": "RuntimeDefault"}, where
        if is_app(container):
            assert ctx.get("runAsUser") == 10001, where
        assert pod.get("automountServiceAccountToken") is False, where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container.get("resources", {}).get(kind, {})), where
        if res["kind"] != "Job":
            assert "readinessProbe" in container and "livenessProbe" in container, where
        # The root file system is read-only: /tmp is the only scratch space.
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, where
        checked += 1
    assert (
        checked
        == {"base": 3, "overlays/dev": 5, "overlays/prod": 3, "overlays/prod-cluster": 3}[tree]
    )


@pytest.mark.parametrize("tree", TREES)
def test_services_probe_health_endpoints_and_are_scraped(tree: str) -> None:
    resources = rendered(tree)
    for name, port in (("api", 8000), ("gateway", 8001)):
        deployment = find(resources, "Deployment", name)
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            http = container[probe]["httpGet"]
            assert http["path"] == path
            assert ports.get(http["port"], http["port"]) == port
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PORT"] == str(port)
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        spread = template["spec"]["topologySpreadConstraints"]
        hostname = [c for c in spread if c["topologyKey"] == "kubernetes.io/hostname"]
        assert hostname, name
        assert (
            hostname[0]["labelSelector"]["matchLabels"].items()
            <= template["metadata"]["labels"].items()
        )


def _drain_seconds(resources: list[Resource], container: dict[str, Any]) -> float:
    value = effective_env(resources, container, partial=True).get("SHUTDOWN_DRAIN_SECONDS")
    if value is not None:
        return float(value)
    default: float = Settings.model_fields["shutdown_drain_seconds"].default
    return default


@pytest.mark.parametrize("tree", TREES)
def test_gateway_grace_covers_prestop_and_drain(tree: str) -> None:
    resources = rendered(tree)
    pod = find(resources, "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    prestop = float(command[1])
    assert prestop >= 3, "give the endpoints controller time to drop the pod"
    drain = _drain_seconds(resources, container)
    assert pod["terminationGracePeriodSeconds"] >= prestop + drain + PRESTOP_MARGIN_SECONDS
    # The readiness probe notices the drain well before the grace runs out.
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= drain


@pytest.mark.parametrize("tree", TREES)
def test_replicas_autoscaling_and_budget(tree: str) -> None:
    resources = rendered(tree)
    assert find(resources, "Deployment", "api")["spec"]["replicas"] >= 2
    gateway = find(resources, "Deployment", "gateway")
    # The HPA owns the gateway count; a replicas field would fight it on every apply.
    assert "replicas" not in gateway["spec"]
    hpa = find(resources, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    metrics = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert "cpu" in metrics
    pdb = find(resources, "PodDisruptionBudget", "gateway")
    assert pdb["apiVersion"] == "policy/v1"
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


@pytest.mark.parametrize("tree", TREES)
def test_ingress_routes_without_affinity(tree: str) -> None:
    resources = rendered(tree)
    (ingress,) = [r for r in resources if r["kind"] == "Ingress"]
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    for key in annotations:
        for word in ("affinity", "session-cookie", "upstream-hash-by", "sticky"):
            assert word not in key, key
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
    for rule in ingress["spec"]["rules"]:
        routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
        assert routes == {"/ws": "gateway", "/": "api"}


@pytest.mark.parametrize("tree", TREES)
def test_seed_job(tree: str) -> None:
    job = find(rendered(tree), "Job", "seed")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["seed", "/app/seeds/blocks.yaml"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_images_per_overlay() -> None:
    for tree, expected in (
        ("overlays/dev", "coderoom:dev"),
        ("overlays/prod", "registry.example.com/coderoom/coderoom:0.1.0"),
        ("overlays/prod-cluster", "registry.example.com/coderoom/coderoom:0.1.0"),
    ):
        images = {c["image"] for _, c in containers(rendered(tree)) if is_app(c)}
        assert images == {expected}
