"""Secrets: finding a run's secret values, mounting them as files, keeping them out of
everything recorded or printed, and the keyed digest that stands for them in the state.

A value is registered with the redactor as soon as it is resolved; ``redact_text`` masks every
registered value, so the one boundary rule is: text that is recorded (state, journal) or
printed (stderr, ``--json``) passes ``redact_text`` last, whatever produced it. It works on the
final text, never on an exception's arguments: a library's error may hold the value in a list
(``CalledProcessError``), a filename (``OSError``), a dict or its own ``__str__``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path, PurePosixPath

from .errors import ConfigError
from .sdk import Secret

# The redactor's registry: every secret value this process has resolved, with the forms it
# takes once quoted (``repr`` in a list's or a filename's text, JSON escapes in ``--json``).
# Never shrinks (a value once a secret stays masked: an error raised after its run ended may
# still quote it).
_values: set[str] = set()
_values_lock = threading.Lock()
_MASK = "[secret]"


def _quoted_forms(value: str) -> set[str]:
    """``value`` as it reads inside a repr and inside JSON, and each of those quoted again
    (a repr'd list inside a JSON document)."""
    escapes = (lambda v: repr(v)[1:-1], lambda v: json.dumps(v)[1:-1],
               lambda v: json.dumps(v, ensure_ascii=False)[1:-1])
    forms = {value}
    for _ in range(2):
        forms |= {esc(f) for f in forms for esc in escapes}
    return forms


def register(values) -> None:
    forms = set()
    for v in values:
        if isinstance(v, str) and len(v) >= 3:
            forms |= _quoted_forms(v)
    with _values_lock:
        _values.update(forms)


def redact_text(text: str | None) -> str | None:
    """``text`` with every registered secret value masked."""
    if not text:
        return text
    with _values_lock:
        values = sorted(_values, key=len, reverse=True)
    for v in values:
        if v in text:
            text = text.replace(v, _MASK)
    return text


def _one_line(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # a str() that fails (a py4j error asking a dead JVM)
        text = "(its message could not be read)"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def error_text(e: BaseException) -> str:
    """The one line an error is recorded and reported as, redacted: each exception of the
    chain (``raise ... from``, or raised while handling another) that the text so far does not
    already quote (``ProviderError`` quotes its cause)."""
    text, seen = "", set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        part = _one_line(e)
        if part not in text:
            text = f"{text} <- {part}" if text else part
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return redact_text(text)


# ------------------------------------------------------------------ the digest of a secret
KEY_FILE = "hmac.key"
_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


def config_dir() -> Path:
    """Where the engine keeps what must not live in a state file: ``$TASKRIG_CONFIG_DIR``,
    else ``$XDG_CONFIG_HOME/taskrig``, else ``~/.config/taskrig``."""
    if os.environ.get("TASKRIG_CONFIG_DIR"):
        return Path(os.environ["TASKRIG_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "taskrig"


def _create_key(path: Path) -> None:
    """32 random bytes, 0600, in a 0700 folder. Written whole to a temporary file, then
    hard-linked into place: of two processes racing, one link wins and both read its key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{KEY_FILE}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def hmac_key() -> bytes:
    """This user's digest key (see ``config_dir``), created on first use. Kept outside the
    state file, so the state's digests cannot be checked against guesses without it."""
    path = config_dir() / KEY_FILE
    with _keys_lock:
        if path in _keys:
            return _keys[path]
        if not path.exists():
            _create_key(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}): chmod 600 it", "TASKRIG_CONFIG_DIR")
        key = path.read_bytes()
        if len(key) != 32:
            raise ConfigError(f"{path} is not an HMAC key (32 bytes expected, {len(key)} found): remove it and "
                              f"a new one is made (every recorded secret then shows as changed once)",
                              "TASKRIG_CONFIG_DIR")
        _keys[path] = key
        return key


def secret_digest(value: str) -> str:
    """HMAC-SHA256 of ``value`` under this user's key, in hex: the same value always gives
    the same digest (a changed secret is a change), and a short secret cannot be recovered
    from it by hashing guesses, as it could from a bare hash."""
    return hmac.new(hmac_key(), str(value).encode(), hashlib.sha256).hexdigest()


PLACEHOLDER_PREFIX = "(secret hmac:"


def secret_placeholder(value: str) -> str:
    """What a state, a plan or ``--json`` holds instead of a secret string. The value is
    registered with the redactor too: an error that quotes it is masked."""
    register([str(value)])
    return f"{PLACEHOLDER_PREFIX}{secret_digest(value)[:32]})"


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
