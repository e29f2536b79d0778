"""Pieces every operator manifest is made of: names, labels, containers' resources and env.

Pure functions of plain values, imported by each plugin's ``manifests.py``, so the kubernetes
backend and a ``pulumi_kubernetes`` component build byte-identical objects from one config.
No client, no engine state.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from engine.extend import PLACEHOLDER_PREFIX, secret_placeholder

# Label keys of taskrig's own: the run and task labels change every run and are ignored on
# reusable objects (``ignore_changes=('metadata.labels["taskrig/run-id"]',)``, Pulumi's syntax).
STACK_LABEL = "taskrig/stack"
RUN_LABEL = "taskrig/run-id"
TASK_LABEL = "taskrig/task"
MANAGED_BY = {"app.kubernetes.io/managed-by": "taskrig"}

DEFAULT_NAMESPACE = "default"
NAMESPACE_ENV = "ENGINE_K8S_NAMESPACE"
# The operators' own clean-up, should the engine and its recovery both be gone for good.
DEFAULT_TTL_SECONDS = 3600
TTL_ENV = "ENGINE_K8S_TTL_SECONDS"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def _digest(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def dns_name(text: str, max_len: int = 63) -> str:
    """A DNS-1035 label (what Service names need) from any text, deterministically.

    Lower-cased, other characters become '-', a letter in front if it starts with a digit.
    If that changed anything or the result is longer than ``max_len``, a hash of the original
    is appended (within ``max_len``), so ``dask_env`` and ``dask-env`` never share a name.
    """
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    s = re.sub(r"-{2,}", "-", s)
    if not s or not s[0].isalpha():
        s = "t-" + s if s else "t"
    if s == text and len(s) <= max_len:
        return s
    suffix = "-" + _digest(text)
    return s[: max_len - len(suffix)].rstrip("-") + suffix


def label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both ends) that is the
    text itself when it already is one, else a readable prefix plus a hash."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    suffix = "-" + _digest(text)
    s = s[: 63 - len(suffix)].strip("-_.")
    return (s + suffix) if s else suffix[1:]


def stack_selector(stack: str) -> str:
    """The label selector of everything the engine made for ``stack``."""
    return f"{STACK_LABEL}={label_value(stack)}"


def labels(stack: str, run_id: Optional[str], task: Optional[str]) -> dict[str, str]:
    out = {**MANAGED_BY, STACK_LABEL: label_value(stack)}
    if run_id:
        out[RUN_LABEL] = label_value(run_id)
    if task:
        out[TASK_LABEL] = label_value(task)
    return out


def stable_labels(all_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that never change between runs, for pod templates: a reusable cluster's
    pods must not be re-labelled (or rolled) by every run that uses it."""
    return {k: v for k, v in all_labels.items() if k in MANAGED_BY or k == STACK_LABEL}


def namespace_from_env() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def ttl_from_env() -> int:
    raw = os.environ.get(TTL_ENV)
    return int(raw) if raw and raw.isdigit() else DEFAULT_TTL_SECONDS


@dataclass(frozen=True)
class Target:
    """Everything a manifest needs besides the plugin's own config: the object's name,
    namespace and labels, and the environment's image, resources and variables (the defaults
    for any member that names none), and the operator's time-to-live."""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: Mapping[str, str] = field(default_factory=dict)
    image: Optional[str] = None
    resources: Any = None  # engine.Resources
    env: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: int = DEFAULT_TTL_SECONDS

    def metadata(self) -> dict:
        return {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)}


def quantity(value: Any, memory: bool = False) -> Optional[str]:
    """A Kubernetes quantity string: CRDs type them as strings (the Dask ones reject numbers)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else f"{int(round(value * 1000))}m"
    text = str(value).strip()
    if _QUANTITY.match(text):
        return text
    if memory:  # Flyte-style "4GB" / "512MiB": to bytes
        from engine.sdk import parse_memory

        return str(parse_memory(text))
    raise ValueError(f"{value!r} is not a Kubernetes quantity")


def container_resources(res: Any) -> dict:
    """Flyte ``Resources`` as a container's requests and limits (equal, as Flyte sets them)."""
    if res is None:
        return {}
    q: dict[str, str] = {}
    if getattr(res, "cpu", None) is not None:
        q["cpu"] = quantity(res.cpu)
    if getattr(res, "memory", None) is not None:
        q["memory"] = quantity(res.memory, memory=True)
    if getattr(res, "disk", None) is not None:
        q["ephemeral-storage"] = quantity(res.disk, memory=True)
    limits = dict(q)
    if getattr(res, "gpu", None) is not None:
        limits["nvidia.com/gpu"] = quantity(res.gpu)
    out = {}
    if q:
        out["requests"] = q
    if limits:
        out["limits"] = limits
    return out


def shm_volume(res: Any) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) for ``Resources(shm=...)``: a memory-backed /dev/shm."""
    if res is None or getattr(res, "shm", None) is None:
        return [], []
    return ([{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity(res.shm, memory=True)}}],
            [{"name": "dshm", "mountPath": "/dev/shm"}])


def env_list(env: Mapping[str, str]) -> list[dict]:
    return [{"name": k, "value": str(v)} for k, v in sorted(env.items())]


def prune(value: Any) -> Any:
    """Drop None and empty dicts/lists, recursively: the schemas reject null, and an empty
    field would be an owned field under server-side apply for nothing."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [prune(v) for v in value if v is not None]
    return value


def image_name(image: Any) -> Optional[str]:
    """The environment's image as a reference string (a string, or an object with ``uri``)."""
    if image is None or isinstance(image, str):
        return image
    for attr in ("uri", "image", "name"):
        v = getattr(image, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


# Secrets in string maps (spark_conf's fs.s3a.secret.key): the cluster must get the value, the
# state file and the plan must not. The recorded manifest holds the engine's placeholder, a keyed
# digest of the value (engine.extend.secret_placeholder), so a changed secret still shows as a
# change and a live value can be compared with it by digesting it again.
_SENSITIVE = re.compile(r"secret|password|passwd|token|credential|(^|\.)key($|\.)", re.IGNORECASE)


def is_sensitive(key: str) -> bool:
    return bool(_SENSITIVE.search(key))


def placeholder(value: str) -> str:
    return secret_placeholder(value)


def unredact_equal(recorded: str, live: str) -> bool:
    """Whether ``recorded`` is the placeholder of the ``live`` value."""
    return recorded.startswith(PLACEHOLDER_PREFIX) and recorded == secret_placeholder(live)


def redact_map(values: Mapping[str, str]) -> dict[str, str]:
    return {k: placeholder(v) if is_sensitive(k) else v for k, v in values.items()}


def as_json(obj: Any) -> Any:
    """A pod spec or template as the API's JSON: a dict as given (camelCase expected), a
    ``kubernetes.client`` model through the client's own serializer (its ``to_dict`` would
    give snake_case keys, which the CRD schema rejects as unknown fields)."""
    if obj is None or isinstance(obj, (dict, list, str, int, float, bool)):
        import copy

        return copy.deepcopy(obj)
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def merge_container(spec: dict, primary: Optional[str], ours: dict, first: bool = False) -> dict:
    """A pod spec from a user's template with our container merged into its primary one
    (named ``primary``, else the only or first): the user's fields win where both say
    something, ours fill the rest. ``first`` moves it to index 0 (KubeRay's rule)."""
    spec = dict(spec or {})
    containers = [dict(c) for c in spec.get("containers") or []]
    idx = next((i for i, c in enumerate(containers) if c.get("name") == primary), None)
    if idx is None and containers:
        idx = 0
    if idx is None:
        containers.append(dict(ours))
        idx = len(containers) - 1
    else:
        merged = {**ours, **{k: v for k, v in containers[idx].items() if v is not None}}
        merged["name"] = ours["name"] if containers[idx].get("name") in (None, primary) else containers[idx]["name"]
        if "env" in ours and "env" in containers[idx]:
            names = {e.get("name") for e in containers[idx]["env"]}
            merged["env"] = containers[idx]["env"] + [e for e in ours["env"] if e["name"] not in names]
        containers[idx] = merged
    if first and idx:
        containers.insert(0, containers.pop(idx))
    spec["containers"] = containers
    return spec
