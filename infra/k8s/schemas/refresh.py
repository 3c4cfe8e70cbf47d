#!/usr/bin/env python3
"""Vendor KubeRay's CRD schemas (the `openAPIV3Schema` of RayCluster, RayJob and RayService).

tests/infra/test_k8s_manifests.py validates our ray.io manifests against these files, offline. Refresh
them when the deployment moves to another KubeRay release (the README names the minimum, and the
schemas should be those of the minimum: a field added later would be pruned by an older operator):

    python infra/k8s/schemas/refresh.py v1.5.1                    # downloads from GitHub (network)
    python infra/k8s/schemas/refresh.py v1.5.1 --repo ~/kuberay   # from a local clone (offline)

then run the tests and commit the changed JSON files. Each file records the KubeRay tag and commit it
came from. `description` texts are dropped to keep the files small; nothing else is changed (the test
adds `additionalProperties: false` itself, when it loads them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
GITHUB_REPO = "ray-project/kuberay"
CRD_DIR = "ray-operator/config/crd/bases"
CRDS = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
API_VERSION = "v1"


def _from_git(repo: Path, tag: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{tag}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def _git_commit(repo: Path, tag: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"{tag}^{{commit}}"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def _github_commit(tag: str) -> str:
    info = json.loads(_http_get(f"https://api.github.com/repos/{GITHUB_REPO}/commits/{tag}"))
    return info["sha"]


def _strip_descriptions(node):
    if isinstance(node, dict):
        return {
            k: _strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tag", help="a KubeRay release tag, e.g. v1.5.1")
    parser.add_argument("--repo", type=Path, help="a local clone of KubeRay (else download from GitHub)")
    args = parser.parse_args()

    commit = _git_commit(args.repo, args.tag) if args.repo else _github_commit(args.tag)
    for kind, filename in CRDS.items():
        path = f"{CRD_DIR}/{filename}"
        if args.repo:
            text = _from_git(args.repo, commit, path)
        else:
            text = _http_get(f"https://raw.githubusercontent.com/{GITHUB_REPO}/{commit}/{path}")
        crd = yaml.safe_load(text)
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind, path
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == API_VERSION]
        out = {
            "kuberay_version": args.tag,
            "kuberay_commit": commit,
            "source": f"https://github.com/{GITHUB_REPO}/blob/{commit}/{path}",
            "apiVersion": f"{crd['spec']['group']}/{API_VERSION}",
            "kind": kind,
            "openAPIV3Schema": _strip_descriptions(version["schema"]["openAPIV3Schema"]),
        }
        target = HERE / f"{kind.lower()}.json"
        target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"{target.relative_to(HERE.parent.parent.parent)}: {kind} from KubeRay {args.tag} ({commit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
