"""The task's code as a bundle, for a body that runs away from the engine (a pod).

Flyte's fast registration: the image holds the interpreter, the engine and the libraries; the
task's own source travels with each run, so an edit needs no image build. The bundle is the
source root of the task's module (the folder put on ``sys.path`` for a file loaded by path,
the ``sys.path`` entry holding the top-level package of a module loaded by name), as a
deterministic tar.gz: the same files give the same bytes and the same digest.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

from .errors import ConfigError

# Never shipped: caches, version control, virtual environments, the engine's own state.
IGNORED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                     ".engine", ".venv", "venv", "node_modules", ".tox", ".eggs", "build", "dist"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".so.tmp", ".egg-info")
MAX_BYTES = 64 * 2**20  # a source folder past this is not code: the error names it
MTIME = 315705600  # 1980-01-03: every member's time, fixed (and one a zip of them can carry)


@dataclasses.dataclass(frozen=True)
class TaskRef:
    """Where the body lives: its module's import name, the environment and the task's short name
    (the decorated name, after any ``with_plugin_config``), and the folder to ship."""

    module: str
    env: str
    task: str
    root: Path

    def argv(self) -> list[str]:
        return ["--module", self.module, "--env", self.env, "--task", self.task]


def locate(task) -> TaskRef:
    """The module and source root of ``task``'s function, as the pod will import it."""
    fn = getattr(task.fn, "__wrapped__", task.fn)
    name = fn.__module__
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if module is None or not file:
        raise ConfigError(f"the body of {task.name} is defined in {name!r}, which has no source file to ship "
                          f"(an interactive session?): define it in a module", "task")
    file = Path(file).resolve()
    if name == "__main__":  # a script run directly: the pod imports it by its file name
        spec = getattr(module, "__spec__", None)
        name = spec.name if spec is not None and spec.name != "__main__" else file.stem
    top = name.split(".")[0]
    depth = name.count(".") + (1 if file.name == "__init__.py" else 0)
    root = file.parent
    for _ in range(depth):
        root = root.parent
    if not ((root / f"{top}.py").exists() or (root / top).is_dir()):
        raise ConfigError(f"cannot tell the source root of {name!r} ({file})", "task")
    return TaskRef(name, task.env.name, task.short_name, root)


def _files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in IGNORED or part.endswith(".egg-info") for part in rel.parts):
            continue
        if p.is_file() and not p.is_symlink() and not p.name.endswith(IGNORED_SUFFIXES):
            out.append(p)
    return out


def make(root: Path) -> tuple[bytes, str]:
    """(tar.gz bytes, sha256) of ``root``'s files; mode kept, owner and times not."""
    buf = io.BytesIO()
    total = 0
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for p in _files(root):
            size = p.stat().st_size
            total += size
            if total > MAX_BYTES:
                raise ConfigError(f"the task's source root {root} holds more than {MAX_BYTES // 2**20} MiB "
                                  f"(at {p.relative_to(root)}): move data out of it, or the task into a "
                                  f"smaller package", "task")
            info = tarfile.TarInfo(str(p.relative_to(root)))
            info.size, info.mode, info.mtime = size, p.stat().st_mode & 0o755, MTIME
            with open(p, "rb") as f:
                tar.addfile(info, f)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def extract(data: bytes, dest: Path) -> None:
    """Unpack a bundle made by ``make``; members outside ``dest`` are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
