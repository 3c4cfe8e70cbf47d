"""KubeRay's checks for tests/infra/test_k8s_manifests.py: its CRD schemas made strict (unknown fields are
errors, as the API server would prune them silently), and the rules its operator and the API server
enforce beyond the schemas (ray-operator/controllers/ray/utils/validation.go and its webhooks, as of the
vendored release), re-implemented. Kept apart from the tests: what KubeRay requires, not what we check."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "schemas"
KUBERNETES_VERSION = "1.34.0"  # a release kubernetes-validate ships schemas for
RAY_KINDS = {"RayCluster": "raycluster.json", "RayJob": "rayjob.json", "RayService": "rayservice.json"}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAYCLUSTER_NAME = 53  # KubeRay's MaxRayClusterNameLength; RayJob and RayService: 6 less
GENERATED_SUFFIX = 5  # characters the API server appends to a generateName

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
    """Everything these checks find wrong with one manifest (empty: it would be accepted)."""
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
