"""The operators' CRDs, made acceptable to kube-apiserver 1.20 at load time.

The project ships the upstream CRD files (providers/kubernetes/crds) and dask-kubernetes ships
its own in its wheel. 1.20 refuses three things in them: CEL rules (``x-kubernetes-validations``),
``default: ""`` (checked as null), and list-map keys that are neither required nor defaulted
(left so by the removed empty defaults). Each is changed here, in code, on a copy.
"""

from __future__ import annotations

import copy
import time
from importlib import resources
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT_CRDS = ROOT / "providers" / "kubernetes" / "crds"
DASK_CRDS = ("daskcluster", "daskworkergroup", "daskjob", "daskautoscaler")
# kind family -> the CRD files it needs
FAMILIES = {
    "dask": [f"dask:{n}" for n in DASK_CRDS],
    "ray": ["ray.io_rayclusters.yaml"],
    "spark": ["sparkoperator.k8s.io_sparkapplications.yaml"],
    "pytorch": ["kubeflow.org_pytorchjobs.yaml"],
}


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the Ray and Spark CRDs are 10k+ lines


def _source(ref: str) -> dict:
    if ref.startswith("dask:"):
        base = resources.files("dask_kubernetes.operator") / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
        return yaml.load((base / f"{ref[5:]}.yaml").read_text(), Loader=_Loader)
    path = PROJECT_CRDS / ref
    if not path.is_file():
        raise FileNotFoundError(f"no CRD file {path}")
    return yaml.load(path.read_text(), Loader=_Loader)


def for_120(crd: dict) -> dict:
    """A copy of ``crd`` that kube-apiserver 1.20 accepts, meaning otherwise unchanged."""
    out = copy.deepcopy(crd)

    def walk(node):
        if isinstance(node, dict):
            node.pop("x-kubernetes-validations", None)
            if node.get("default") == "":
                del node["default"]
            for v in node.values():
                walk(v)
            if node.get("x-kubernetes-list-type") == "map":
                items = node.get("items", {})
                props = items.get("properties", {})
                req = items.get("required", [])
                missing = [k for k in node.get("x-kubernetes-list-map-keys", [])
                           if k in props and "default" not in props[k] and k not in req]
                if missing:
                    items["required"] = req + missing
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out.get("spec", {}))
    return out


def wanted(families: list[str]) -> list[dict]:
    return [for_120(_source(ref)) for fam in families for ref in FAMILIES[fam]]


def load(kubeconfig: str, families: list[str], timeout: float = 60) -> list[str]:
    """Server-side apply each CRD and wait until the API serves it (Established)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    api = client.ApiextensionsV1Api(client.ApiClient(cfg))
    names = []
    for crd in wanted(families):
        name = crd["metadata"]["name"]
        api.patch_custom_resource_definition(name, crd, field_manager="taskrig-local-cluster", force=True,
                                             _content_type="application/apply-patch+yaml")
        names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            conds = api.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established within {timeout:.0f} s")
            time.sleep(0.2)
    return names
