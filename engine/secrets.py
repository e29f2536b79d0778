"""Secrets: finding a run's secret values, mounting them as files, and keeping them out of
everything recorded or printed.

A value is registered with the redactor as soon as it is resolved; ``redact_text`` masks every
registered value, so the one boundary rule is: text that is recorded (state, journal) or
printed (stderr, ``--json``) passes ``redact_text`` last, whatever produced it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath

from .errors import ConfigError
from .sdk import Secret

# The redactor's registry: every secret value this process has resolved. Never shrinks (a value
# once a secret stays masked: an error raised after its run ended may still quote it).
_values: set[str] = set()
_values_lock = threading.Lock()


def register(values) -> None:
    with _values_lock:
        _values.update(v for v in values if isinstance(v, str) and len(v) >= 3)


def redact_text(text: str | None) -> str | None:
    """``text`` with every registered secret value masked."""
    if not text:
        return text
    with _values_lock:
        values = sorted(_values, key=len, reverse=True)
    for v in values:
        if v in text:
            text = text.replace(v, "[secret]")
    return text


def lookup_secret(s: Secret) -> str | None:
    """One secret's value, or None: from the process environment (``GROUP_KEY`` or ``KEY``,
    as written or upper case) or from a file in ``ENGINE_SECRETS_DIR`` (``GROUP/KEY`` or ``KEY``)."""
    names = [f"{s.group}_{s.key}", s.default_env_var, s.key] if s.group else [s.key, s.default_env_var]
    for name in dict.fromkeys(names):
        if name in os.environ:
            return os.environ[name]
    sdir = os.environ.get("ENGINE_SECRETS_DIR")
    if sdir:
        for rel in ([Path(s.group) / s.key] if s.group else []) + [Path(s.key)]:
            p = Path(sdir) / rel
            if p.is_file():
                return p.read_text().rstrip("\n")
    return None


def resolve_secret(s: Secret) -> str:
    """A secret's value; a missing one is a ConfigError that names it (never a value)."""
    value = lookup_secret(s)
    if value is not None:
        register([value])
    if value is None:
        sdir = os.environ.get("ENGINE_SECRETS_DIR")
        first = f"{s.group}_{s.key}".upper() if s.group else s.key
        where = f"the environment variable {first}" + (f" or {sdir}/" if sdir else " or a file in ENGINE_SECRETS_DIR")
        raise ConfigError(f"secret {s.ref!r} is not set: put it in {where}", f"secrets.{s.key}")
    return value


def resolve_secrets(env) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(env vars to set, files to mount) from the environment's Secret references.

    Files map a path relative to the run's private secrets directory (the mount path
    re-rooted there, then ``GROUP/KEY``) to (the variable that gets the file's path, value).
    A missing secret is an error before anything is provisioned.
    """
    env_vars: dict[str, str] = {}
    files: dict[str, tuple[str, str]] = {}
    for s in env.secrets:
        value = resolve_secret(s)
        if s.env_var:
            env_vars[s.env_var] = value
        if s.mount is not None:
            rel = PurePosixPath(*PurePosixPath(str(s.mount)).parts[1:]) if PurePosixPath(str(s.mount)).is_absolute() \
                else PurePosixPath(str(s.mount))
            files[str(rel / (s.group or "") / s.key)] = (f"{s.default_env_var}_FILE", value)
    return env_vars, files


_MOUNT_PREFIX = "taskrig-secrets-"


def _mount_base() -> str:
    """Memory-backed when the machine has it, so a mounted secret never reaches a disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def write_secret_files(run_id: str, files: dict[str, tuple[str, str]]) -> tuple[Path, dict[str, str]]:
    """A private (0700) directory with each mounted secret in a 0600 file; (dir, var -> path).
    Named after the run so that recovery of a crashed run can remove it."""
    root = Path(tempfile.mkdtemp(prefix=f"{_MOUNT_PREFIX}{run_id}-", dir=_mount_base()))
    paths = {}
    for rel, (var, value) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        paths[var] = str(path)
    return root, paths


def remove_secret_files(run_ids: list[str]) -> None:
    for run_id in run_ids:
        for d in Path(_mount_base()).glob(f"{_MOUNT_PREFIX}{run_id}-*"):
            shutil.rmtree(d, ignore_errors=True)


def redact(text: str | None, values) -> str | None:
    """``text`` with every secret value masked (values shorter than 3 would mask too much)."""
    if not text:
        return text
    for v in sorted((v for v in values if v and len(v) >= 3), key=len, reverse=True):
        text = text.replace(v, "[secret]")
    return text


def redact_exception(e: BaseException, values) -> None:
    """Mask secret values in an exception chain's messages, in place, before the error is
    recorded or printed: a library that quotes its credentials (an auth error showing the
    token) must not put them in the state file or a log."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(isinstance(a, str) and a != redact(a, values) for a in e.args):
            e.args = tuple(redact(a, values) if isinstance(a, str) else a for a in e.args)
        e = e.__cause__ or e.__context__
