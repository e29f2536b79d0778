"""Validating a manifest against its operator's official CRD schema, before any call to a cluster.

A CRD's ``openAPIV3Schema`` is OpenAPI v3 with Kubernetes extensions, not JSON Schema. It is
translated once per kind (and cached: the RayCluster CRD is ~1 MB) with the API server's
semantics, made stricter where the server would silently lose what we asked for:

- an unknown field is an ERROR here. The server prunes it without a word (``executor.instancez``
  would be dropped and the default used); only ``x-kubernetes-preserve-unknown-fields`` keeps
  unknown fields, and there they are accepted;
- ``nullable: true`` allows null; a null anywhere else is an error (the server would prune it);
- ``x-kubernetes-int-or-string`` takes an integer or a string, but the Dask CRDs' ``type: string,
  format: int-or-string`` (no extension) stays a string, because the server rejects the integer;
- ``x-kubernetes-list-type: map|set``: duplicate keys or items are errors, as on the server;
- ``x-kubernetes-embedded-resource`` objects take ``apiVersion``, ``kind`` and ``metadata``;
- the root's ``metadata`` (``type: object`` in the CRD, checked by the server itself) gets the
  server's rules for name, namespace, labels and annotations.

CEL rules (``x-kubernetes-validations``) are not evaluated; defaults are not applied (the
server applies them, and drift detection only compares the fields a manifest sets).

The CRD files are the operators' upstream YAML, shipped in ``providers/kubernetes/crds/`` so
validation does not depend on where the package is installed and names the exact operator
release it checks against; ``ENGINE_K8S_CRDS`` points at another directory of such files (a
newer operator) instead.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from engine.extend import ConfigError

PACKAGE_CRDS = Path(__file__).resolve().parent / "crds"

# The server's own rules for the root metadata (apimachinery validation).
_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
              r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS1123_LABEL},
        "labels": {"type": "object", "propertyNames": {"pattern": _LABEL_KEY, "maxLength": 316},
                   "additionalProperties": {"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def crd_dir() -> Path:
    override = os.environ.get("ENGINE_K8S_CRDS")
    return Path(override) if override else PACKAGE_CRDS


def crd_file(group: str, plural: str) -> Path:
    """``<group>_<plural>.yaml``: the name kubebuilder gives CRD files."""
    return crd_dir() / f"{group}_{plural}.yaml"


def crd_source(path: Path) -> str:
    """The file's ``# source: owner/repo@tag ...`` line, for error messages."""
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return str(path)
    m = re.match(r"#\s*source:\s*(\S+@\S+)", first)
    return m.group(1) if m else path.name


# ---------------------------------------------------------------------------------- translation
def _translate(node: Any) -> Any:
    """One OpenAPI v3 (structural, with k8s extensions) node to JSON Schema."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _translate(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _translate(value) if isinstance(value, dict) else value
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_translate(v) for v in value]
        elif key in ("description", "default", "example", "externalDocs", "x-kubernetes-validations"):
            continue  # documentation, server-side defaulting, CEL: not checked here
        elif key == "format":
            continue  # int32, int64, quantity, int-or-string: the server enforces none by format
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        if "anyOf" in out:
            out.pop("type", None)
        else:
            out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    if out.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in out:
        # Unknown fields: pruned by the server, rejected here.
        out["additionalProperties"] = False
    if node.get("nullable"):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif isinstance(t, list) and "null" not in t:
            out["type"] = [*t, "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    elif "type" not in out and "anyOf" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        # A schema with no type (RayCluster's desiredCPU quantities say only int-or-string): no null.
        out.setdefault("not", {"type": "null"})
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def to_json_schema(openapi: dict, api_version: str, kind: str) -> dict:
    """The whole object's JSON Schema: the CRD's schema plus the root fields the server owns."""
    schema = _translate(openapi)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    props["metadata"] = OBJECT_META
    props.pop("status", None)  # the operator's; a manifest that sets it is wrong
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


# --------------------------------------------------------------------------------- validators
def _list_map_keys(validator, keys, instance, schema):
    """``x-kubernetes-list-type: map``: no two items with the same key values (after the
    defaults the server would apply, so a port with no protocol clashes with its TCP twin)."""
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(instance, list):
        return
    from jsonschema.exceptions import ValidationError

    item_props = (schema.get("items") or {}).get("properties") or {}
    defaults = {k: (item_props.get(k) or {}).get("x-default") for k in keys}
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k, defaults[k]) for k in keys)
        if key in seen:
            desc = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
            yield ValidationError(f"duplicate entry ({desc}) also at index {seen[key]}", path=[i])
        seen[key] = i


@functools.lru_cache(maxsize=None)
def _validator_class():
    from jsonschema import Draft7Validator, validators

    return validators.extend(Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys})


def _keep_key_defaults(node: Any) -> Any:
    """Copy ``default`` of list-map key fields to ``x-default`` before translation drops it."""
    if isinstance(node, dict):
        if node.get("x-kubernetes-list-type") == "map":
            props = ((node.get("items") or {}).get("properties")) or {}
            for k in node.get("x-kubernetes-list-map-keys") or ():
                if isinstance(props.get(k), dict) and "default" in props[k]:
                    props[k]["x-default"] = props[k]["default"]
        for v in node.values():
            _keep_key_defaults(v)
    elif isinstance(node, list):
        for v in node:
            _keep_key_defaults(v)
    return node


@functools.lru_cache(maxsize=None)
def validator(group: str, version: str, kind: str, plural: str):
    """The compiled validator of one kind and version (cached for the process)."""
    import yaml

    path = crd_file(group, plural)
    try:
        with open(path) as f:
            crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise ConfigError(f"no CRD file for {kind} ({path}); set ENGINE_K8S_CRDS to a directory that "
                          f"holds {path.name}", "ENGINE_K8S_CRDS") from None
    names = crd.get("spec", {}).get("names", {})
    if crd.get("spec", {}).get("group") != group or names.get("kind") != kind:
        raise ConfigError(f"{path} is not the CRD of {kind}.{group}", "ENGINE_K8S_CRDS")
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            openapi = _keep_key_defaults(v["schema"]["openAPIV3Schema"])
            break
    else:
        raise ConfigError(f"{path} has no version {version} of {kind}", "ENGINE_K8S_CRDS")
    schema = to_json_schema(openapi, f"{group}/{version}", kind)
    cls = _validator_class()
    return cls(schema), crd_source(path)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(err) -> tuple[str, str]:
    """(field path, message) of one jsonschema error, in the words of a Kubernetes user."""
    path = list(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set((err.schema.get("properties") or {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        if extra:
            hint = f"; known fields: {', '.join(sorted(allowed))}" if 0 < len(allowed) <= 12 else ""
            return _path(path + [extra[0]]), f"unknown field (the API server would silently drop it){hint}"
    if err.validator == "type" and err.instance is None:
        return _path(path), "null is not allowed here (the API server would drop the field): leave it out"
    if err.validator == "anyOf" and err.context:
        sub = min(err.context, key=lambda e: len(list(e.relative_path)))
        return _path(path), sub.message
    return _path(path), err.message


def errors(manifest: dict, group: str, version: str, kind: str, plural: str) -> list[tuple[str, str]]:
    """Every (field path, message), in document order."""
    v, _ = validator(group, version, kind, plural)
    return sorted((_describe(e) for e in v.iter_errors(manifest)), key=lambda e: e[0])


def validate(manifest: dict, group: str, version: str, kind: str, plural: str) -> dict:
    """Raise a ConfigError naming the first invalid field of ``manifest`` (a path such as
    ``spec.worker.spec.containers[0].resources.limits.cpu``); returns the manifest."""
    found = errors(manifest, group, version, kind, plural)
    if found:
        field, msg = found[0]
        _, source = validator(group, version, kind, plural)
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{msg}{more} [the {kind} manifest, checked against the {group}/{version} CRD of "
                          f"{source}]", f"{kind}.{field}" if field else kind)
    return manifest
