"""The data location of bodies that run away from the engine: an fsspec URL.

``ENGINE_DATA_URL`` (``s3://bucket/prefix``, ``gs://...``, ``file:///path`` on a volume every
node mounts) holds, per run, ``<url>/<stack>/<run id>/``: the code bundle, the pickled inputs,
and what the body leaves (its pickled result, or its error). Both sides use this module: the
engine writes and deletes, the body's runner (``engine.runner``) reads and writes.

Credentials are the storage library's own (``AWS_*`` for s3fs, ``GOOGLE_APPLICATION_CREDENTIALS``
for gcsfs): the engine hands the pods the variables ``forwarded_env`` names.
"""

from __future__ import annotations

import os
from .errors import ConfigError

BUNDLE, INPUTS, OUTPUTS, ERROR = "bundle.tar.gz", "inputs.pkl", "outputs.pkl", "error.json"

# What an S3-compatible store needs in the pod; only those set in the engine's environment go.
FORWARDED = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")
SECRET_VARS = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


def base_url() -> str:
    url = (os.environ.get("ENGINE_DATA_URL") or "").rstrip("/")
    if not url:
        raise ConfigError("a body that runs in the cluster needs a data location its pods can reach: set "
                          "ENGINE_DATA_URL (s3://bucket/prefix, gs://bucket/prefix, or file:///path on a volume "
                          "every node mounts)", "ENGINE_DATA_URL")
    if "://" not in url:
        raise ConfigError(f"ENGINE_DATA_URL={url!r} is not a URL (s3://..., gs://..., file:///...)", "ENGINE_DATA_URL")
    return url


def run_url(stack: str, run_id: str) -> str:
    return f"{base_url()}/{stack}/{run_id}"


def join(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}"


def local_path(url: str) -> str | None:
    """The folder of a ``file://`` URL (a volume the pods mount at the same path), else None."""
    return url[len("file://"):] if url.startswith("file://") else None


def forwarded_env() -> dict[str, str]:
    names = [n.strip() for n in os.environ.get("ENGINE_DATA_ENV", "").split(",") if n.strip()] or FORWARDED
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def _fs(url: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ConfigError("the data location needs fsspec (pip install 'taskrig[kubernetes]')",
                          "ENGINE_DATA_URL") from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"ENGINE_DATA_URL {url!r}: {e}", "ENGINE_DATA_URL") from None


def put(url: str, data: bytes) -> None:
    fs, path = _fs(url)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def get(url: str) -> bytes | None:
    """The object's bytes, or None when there is none."""
    fs, path = _fs(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def exists(url: str) -> bool:
    fs, path = _fs(url)
    fs.invalidate_cache()
    return fs.exists(path)


def remove(url: str) -> None:
    """Delete an object or a whole folder; gone already is success."""
    fs, path = _fs(url)
    fs.invalidate_cache()
    try:
        if fs.isdir(path):
            fs.rm(path, recursive=True)
        elif fs.exists(path):
            fs.rm(path)
    except FileNotFoundError:
        pass

