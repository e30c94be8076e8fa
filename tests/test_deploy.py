"""Deployment files, validated offline: Kubernetes manifests against the schemas of Kubernetes
1.33 (strict), the kustomize overlays as rendered, the autoscaler configs against each other, and
the Dockerfile with hadolint."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
BUILTIN = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(base, patch):
    """Strategic-merge subset used by the overlays: dicts deep-merge, lists of named dicts merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if match is None:
                out.append(item)
            else:
                out[match] = merge(out[match], item)
        return out
    return patch


def render(overlay: Path) -> list[dict]:
    """kustomize build for the features the overlays use: resources, images, patches."""
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in kust.get("resources", []):
        target = (overlay / res).resolve()
        docs += render(target) if target.is_dir() else load(target)
    for img in kust.get("images", []):
        for d in docs:
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    for p in kust.get("patches", []):
        patch = load(overlay / p["path"])[0]
        docs = [merge(d, patch) if d["kind"] == p["target"]["kind"] and d["metadata"]["name"] == p["target"]["name"]
                else d for d in docs]
    return docs


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/gpu"])
def test_manifests_validate_against_kubernetes_schemas(overlay):
    docs = render(K8S / overlay)
    kinds = {d["kind"] for d in docs}
    assert BUILTIN <= kinds and "ServiceMonitor" in kinds
    for d in docs:
        if d["kind"] in BUILTIN:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)


def test_gpu_overlay_requests_a_gpu_and_cpu_overlay_does_not():
    def container(overlay):
        dep = next(d for d in render(K8S / overlay) if d["kind"] == "Deployment")
        return dep["spec"]["template"]["spec"]["containers"][0]

    gpu, cpu = container("overlays/gpu"), container("overlays/cpu")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"] == "presso:gpu"
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and cpu["image"] == "presso:cpu"
    assert {e["name"] for e in gpu["env"]} >= {"PRESSO_MODELS_DIR", "PRESSO_MAX_BATCH_SIZE"}


def test_probes_and_drain_timing():
    dep = load(K8S / "base" / "deployment.yaml")[0]
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/health/ready"
    pre_stop_s = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    uvicorn_drain_s = 30  # service/server.py timeout_graceful_shutdown
    assert spec["terminationGracePeriodSeconds"] >= pre_stop_s + uvicorn_drain_s
    assert spec["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]


def test_hpa_keda_and_adapter_share_signal_and_target():
    hpa = load(K8S / "base" / "hpa.yaml")[0]
    keda = load(K8S / "keda" / "scaledobject.yaml")[0]
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "rules.yaml").read_text())["rules"]["custom"][0]
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == rules["name"]["as"]
    trigger = keda["spec"]["triggers"][0]["metadata"]
    assert trigger["threshold"] == metric["target"]["averageValue"]
    assert "presso_inflight_requests" in trigger["query"] and "[20s]" in trigger["query"]
    assert "[20s]" in rules["metricsQuery"]
    assert trigger["ignoreNullValues"] == "false" and keda["spec"]["fallback"]["replicas"] >= 2
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert keda["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]


def test_compose_file_names_the_service_and_prometheus():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"presso", "prometheus"} <= set(compose["services"])
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["presso:8000"]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_queries_name_real_metrics():
    import json
    import re

    from prometheus_client import generate_latest

    from presso.service.metrics import Metrics

    m = Metrics()
    m.register_model("x")
    exposed = generate_latest(m.registry).decode()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/presso.json").read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for needed in ("request rate", "latency", "queue depth", "batch size", "429", "504"):
        assert needed in titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"presso_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count|total)$", "", name)
                assert base in exposed, f"{panel['title']}: {name} is not exported"


def test_prometheus_config_passes_promtool():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed")
    result = subprocess.run([promtool, "check", "config", str(ROOT / "deploy/prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- KServe ---------------------------------------------------------------------------------------

KSERVE = ROOT / "deploy" / "k8s" / "kserve"
KSERVE_CRDS = ROOT / "tests" / "data" / "kserve"


def strict(schema):
    """A CRD's structural schema as JSON Schema that refuses unknown fields (the API server would
    drop them silently): ``additionalProperties: false`` wherever properties are listed and
    unknown fields are not preserved."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crds() -> tuple[dict, ...]:
    import gzip

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the InferenceService CRD is 2 MB of YAML
    return tuple(yaml.load(gzip.open(path), Loader=loader) for path in sorted(KSERVE_CRDS.glob("*.yaml.gz")))


def crd_schema(kind: str, version: str) -> dict:
    for crd in crds():
        if crd["spec"]["names"]["kind"] == kind:
            found = next(v for v in crd["spec"]["versions"] if v["name"] == version)
            return strict(found["schema"]["openAPIV3Schema"])
    raise LookupError(kind)


def kserve_docs() -> dict[str, dict]:
    return {d["kind"]: d for path in sorted(KSERVE.glob("*.yaml")) for d in load(path)}


@pytest.mark.parametrize("kind", ["ServingRuntime", "InferenceService"])
def test_kserve_manifests_validate_against_kserve_crds(kind):
    jsonschema = pytest.importorskip("jsonschema")
    doc = kserve_docs()[kind]
    group, version = doc["apiVersion"].split("/")
    assert group == "serving.kserve.io"
    schema = crd_schema(kind, version)
    jsonschema.validate({k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")},
                        {**schema, "properties": {k: v for k, v in schema["properties"].items()
                                                  if k not in ("apiVersion", "kind", "metadata", "status")}})
    with pytest.raises(jsonschema.ValidationError):  # the strict schema does catch a misspelt field
        broken = copy.deepcopy(doc)
        broken["spec"]["misspelt"] = 1
        jsonschema.validate({"spec": broken["spec"]}, {"type": "object", "properties": {"spec": schema["properties"]["spec"]}})


def test_kserve_runtime_serves_the_inference_service_and_its_probes_exist():
    from presso.service.settings import Settings

    docs = kserve_docs()
    runtime, isvc = docs["ServingRuntime"], docs["InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    container = runtime["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    Settings(**{k.removeprefix("PRESSO_").lower(): v for k, v in env.items()})  # every variable is a real setting
    assert env["PRESSO_MODELS_DIR"] == "/mnt/models"  # where KServe mounts or copies storageUri
    port = int(env["PRESSO_PORT"])
    assert container["ports"][0]["containerPort"] == port == 8080
    from presso.service.api import create_app

    paths = {r.path for r in create_app(Settings(models_dir=ROOT)).routes}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths and container[probe]["httpGet"]["port"] == port
