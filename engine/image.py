"""Container images with Flyte 2's API: ``Image`` (a base plus layers) and ``ImageBuildEngine``.

An ``Image`` is immutable: every ``with_*`` returns a new one. Its tag is a hash of the base
and of every layer (a source folder counts by its files' contents), so one spec always names
one image and any change names a new one. ``ImageBuildEngine.build`` renders a Dockerfile and
a build context and builds them with a working local builder (docker buildx, podman or buildah).

A built image is a resource (``image:index:Image``) of the ``images`` stack, planned, journaled
and recorded like any other: building the same spec again is a no-change plan, a changed
layer is a replacement (the new tag is built, the old one removed), ``engine destroy images``
removes them all. The provider lives here, not in ``providers/``, because images are part of
the SDK every environment may use, not an integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from .errors import ConfigError, EngineError
from .plan import Plan, plan as make_plan
from .registry import ProviderRegistry
from .resource import Declaration, Options, Provider, make_urn

STACK = "images"
TYPE_TOKEN = "image:index:Image"
DEFAULT_NAME = "taskrig"

# Docker's reference grammar (distribution/reference): lower-case path components.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_REGISTRY_RE = re.compile(rf"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                          rf"(?::[0-9]+)?)(?:/{_COMPONENT})*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Never copied into a build context: caches and VCS data change without the code changing.
_IGNORED = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".engine", ".venv"}


class NoBuilder(EngineError):
    """No working image builder on this machine; the message says what was looked for."""


# ---------------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class PipPackages:
    packages: tuple[str, ...]
    pre: bool = False
    index_url: Optional[str] = None
    extra_index_urls: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()

    def spec(self) -> dict:
        return {"pip": list(self.packages), "pre": self.pre, "index_url": self.index_url,
                "extra_index_urls": list(self.extra_index_urls), "extra_args": list(self.extra_args)}

    def lines(self, ctx: str) -> list[str]:
        args = ["python", "-m", "pip", "install", "--no-cache-dir"]
        if self.pre:
            args.append("--pre")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        args += [*self.extra_args, *self.packages]
        return [f"RUN {shlex.join(args)}"]


@dataclass(frozen=True)
class AptPackages:
    packages: tuple[str, ...]

    def spec(self) -> dict:
        return {"apt": list(self.packages)}

    def lines(self, ctx: str) -> list[str]:
        return ["RUN apt-get update \\\n"
                f" && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {shlex.join(self.packages)} \\\n"
                " && rm -rf /var/lib/apt/lists/*"]


@dataclass(frozen=True)
class EnvVars:
    vars: tuple[tuple[str, str], ...]

    def spec(self) -> dict:
        return {"env": dict(self.vars)}

    def lines(self, ctx: str) -> list[str]:
        # Double-quoted, with '$' escaped: ENV expands variables, a value should arrive as written.
        return ["ENV " + " ".join(f"{k}={json.dumps(v).replace('$', chr(92) + '$')}" for k, v in self.vars)]


@dataclass(frozen=True)
class Commands:
    commands: tuple[str, ...]

    def spec(self) -> dict:
        return {"commands": list(self.commands)}

    def lines(self, ctx: str) -> list[str]:
        return [f"RUN {c}" for c in self.commands]


@dataclass(frozen=True)
class WorkDir:
    path: str

    def spec(self) -> dict:
        return {"workdir": self.path}

    def lines(self, ctx: str) -> list[str]:
        return [f"WORKDIR {self.path}"]


@dataclass(frozen=True)
class SourceFolder:
    """A local folder copied into the image. It counts in the tag by its files' contents,
    read when the tag is computed, so editing a file makes a new image."""

    src: str
    dst: str = "."
    copy_contents_only: bool = False

    def files(self) -> list[Path]:
        root = Path(self.src)
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED)
            out.extend(Path(dirpath, f) for f in sorted(filenames) if not f.endswith((".pyc", ".pyo")))
        return out

    def digest(self) -> str:
        h = hashlib.sha256()
        root = Path(self.src)
        for f in self.files():
            rel = f.relative_to(root).as_posix()
            h.update(rel.encode() + b"\0" + (b"x" if os.access(f, os.X_OK) else b"-") + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()

    def context_dir(self) -> str:
        return f"src/{hashlib.sha256(self.src.encode()).hexdigest()[:12]}"

    def spec(self) -> dict:
        return {"source": self.src, "dst": self.dst, "copy_contents_only": self.copy_contents_only,
                "sha256": self.digest()}

    def lines(self, ctx: str) -> list[str]:
        dst = self.dst if self.copy_contents_only else f"{self.dst.rstrip('/')}/{Path(self.src).name}"
        return [f"COPY {self.context_dir()}/ {shlex.quote(dst + '/')}"]


Layer = Any  # one of the frozen dataclasses above


def _layer_from_spec(spec: dict) -> Layer:
    """A layer back from its recorded spec: the provider renders from inputs alone."""
    if "pip" in spec:
        return PipPackages(tuple(spec["pip"]), spec["pre"], spec["index_url"], tuple(spec["extra_index_urls"]),
                           tuple(spec["extra_args"]))
    if "apt" in spec:
        return AptPackages(tuple(spec["apt"]))
    if "env" in spec:
        return EnvVars(tuple(spec["env"].items()))
    if "commands" in spec:
        return Commands(tuple(spec["commands"]))
    if "workdir" in spec:
        return WorkDir(spec["workdir"])
    if "source" in spec:
        return SourceFolder(spec["source"], spec["dst"], spec["copy_contents_only"])
    raise ValueError(f"unknown layer {spec!r}")


# ---------------------------------------------------------------------------------- Image
def _python_version(v) -> tuple[int, int]:
    if v is None:
        return sys.version_info[:2]
    parts = tuple(int(p) for p in (v.split(".") if isinstance(v, str) else v))
    if len(parts) < 2 or parts[0] != 3:
        raise ConfigError(f"{v!r} is not a Python 3 version such as (3, 12) or '3.12'", "python_version")
    return parts[0], parts[1]


def _strings(values: Iterable[Any], field_name: str) -> tuple[str, ...]:
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"expected non-empty strings, got {v!r}", field_name)
    return out


@dataclass(frozen=True)
class Image:
    """A container image spec, as Flyte 2's ``flyte.Image``. Build it with ``ImageBuildEngine``."""

    base_image: str
    name: Optional[str] = None
    registry: Optional[str] = None
    platform: tuple[str, ...] = ()
    layers: tuple[Layer, ...] = field(default=())

    def __post_init__(self):
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ConfigError(f"{self.name!r} is not an image name (lower case letters, digits, '.', '_', '-', '/')",
                              "name")
        if self.registry is not None and not _REGISTRY_RE.match(self.registry):
            raise ConfigError(f"{self.registry!r} is not a registry (e.g. ghcr.io/my-org, localhost:5000)", "registry")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_debian_base(cls, python_version: tuple[int, int] | str | None = None, registry: str | None = None,
                         name: str | None = None, platform: tuple[str, ...] | None = None) -> "Image":
        """Debian slim with CPython (the running interpreter's version unless given)."""
        major, minor = _python_version(python_version)
        img = cls(base_image=f"python:{major}.{minor}-slim-bookworm", name=name or DEFAULT_NAME, registry=registry,
                  platform=tuple(platform or ()))
        return img._add(WorkDir("/root"), EnvVars((("PYTHONUNBUFFERED", "1"), ("PIP_DISABLE_PIP_VERSION_CHECK", "1"))))

    @classmethod
    def from_base(cls, image_uri: str) -> "Image":
        """An existing image; with no layers added it is used as it is and nothing is built."""
        if not isinstance(image_uri, str) or not image_uri or any(c.isspace() for c in image_uri):
            raise ConfigError(f"{image_uri!r} is not an image reference", "image_uri")
        return cls(base_image=image_uri)

    def clone(self, registry: str | None = None, name: str | None = None) -> "Image":
        return dataclasses.replace(self, registry=registry if registry is not None else self.registry,
                                   name=name if name is not None else self.name)

    # ------------------------------------------------------------------ layers
    def _add(self, *layers: Layer) -> "Image":
        return dataclasses.replace(self, layers=self.layers + layers)

    def with_pip_packages(self, *packages: str, pre: bool = False, index_url: str | None = None,
                          extra_index_urls: str | Iterable[str] | None = None,
                          extra_args: str | Iterable[str] | None = None) -> "Image":
        if isinstance(extra_index_urls, str):
            extra_index_urls = [extra_index_urls]
        if isinstance(extra_args, str):
            extra_args = shlex.split(extra_args)
        return self._add(PipPackages(_strings(packages, "with_pip_packages"), bool(pre), index_url,
                                     tuple(extra_index_urls or ()), tuple(extra_args or ())))

    def with_apt_packages(self, *packages: str) -> "Image":
        return self._add(AptPackages(_strings(packages, "with_apt_packages")))

    def with_env_vars(self, env_vars: dict[str, str]) -> "Image":
        for k, v in env_vars.items():
            if not _ENV_RE.match(str(k)) or not isinstance(v, str):
                raise ConfigError(f"{k!r}={v!r}: names are identifiers, values strings", "with_env_vars")
        return self._add(EnvVars(tuple(sorted(env_vars.items()))))

    def with_commands(self, commands: str | Iterable[str]) -> "Image":
        return self._add(Commands(_strings([commands] if isinstance(commands, str) else commands, "with_commands")))

    def with_workdir(self, workdir: str) -> "Image":
        return self._add(WorkDir(workdir))

    def with_source_folder(self, src: str | os.PathLike, dst: str = ".", copy_contents_only: bool = False) -> "Image":
        path = Path(src).resolve()
        if not path.is_dir():
            raise ConfigError(f"{str(src)!r} is not a folder", "with_source_folder")
        return self._add(SourceFolder(str(path), dst, copy_contents_only))

    # ------------------------------------------------------------------ identity
    def spec(self) -> dict:
        """What the tag is a hash of, and what the state records (the resource's inputs)."""
        return {"base": self.base_image, "platform": list(self.platform),
                "layers": {f"{i:02d}": layer.spec() for i, layer in enumerate(self.layers)}}

    @property
    def tag(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:20]

    @property
    def needs_build(self) -> bool:
        return bool(self.layers)

    @property
    def uri(self) -> str:
        if not self.needs_build:
            return self.base_image
        if not self.name:
            raise ConfigError("an image with layers needs a name to be built: Image.from_base(uri).clone(name=...)",
                              "name")
        return f"{self.registry + '/' if self.registry else ''}{self.name}:{self.tag}"

    def dockerfile(self) -> str:
        return render_dockerfile(self.base_image, self.layers, self.uri, self.tag)


def render_dockerfile(base: str, layers: Iterable[Layer], uri: str, tag: str) -> str:
    lines = [f"# {uri}: rendered by taskrig; the tag is a hash of this image's spec", f"FROM {base}"]
    for layer in layers:
        lines.extend(layer.lines("."))
    lines.append(f'LABEL org.opencontainers.image.ref.name="{uri}" dev.taskrig.image.tag="{tag}"')
    return "\n".join(lines) + "\n"


def render_context(inputs: dict, dest: Path) -> Path:
    """Write a build context (Dockerfile plus copied source folders) from recorded inputs,
    refusing a source folder whose contents no longer match the hash the tag was made from."""
    dest.mkdir(parents=True, exist_ok=True)
    layers = [_layer_from_spec(inputs["layers"][k]) for k in sorted(inputs["layers"])]
    for spec, layer in zip((inputs["layers"][k] for k in sorted(inputs["layers"])), layers):
        if isinstance(layer, SourceFolder):
            if layer.digest() != spec["sha256"]:
                raise ConfigError(f"{layer.src} changed after the image was planned; build again", "with_source_folder")
            target = dest / layer.context_dir()
            for f in layer.files():
                out = target / f.relative_to(layer.src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)
            target.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(render_dockerfile(inputs["base"], layers, inputs["uri"], inputs["tag"]))
    return dest


# ---------------------------------------------------------------------------------- builders
BUILDERS = ("docker", "podman", "buildah")  # the order find_builder tries them in
_STEP_RE = re.compile(r"^(STEP \d+/\d+: .*|#\d+ \[[^\]]*\d+/\d+\] .*)$")  # podman/buildah, buildx


def image_store() -> Path:
    """Where ``scripts/image-builder.sh`` keeps podman's and buildah's configuration and image
    store for this project (``TASKRIG_IMAGE_STORE``, else ``~/.cache/taskrig-images``): the
    host's /etc/containers and /var/lib/containers stay untouched."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("TASKRIG_IMAGE_STORE") or Path(base) / "taskrig-images")


def builder_env() -> dict[str, str]:
    """The environment podman and buildah run in: the project's storage.conf and
    containers.conf when image-builder.sh wrote them, unless the caller named their own."""
    env = dict(os.environ)
    store = image_store()
    for var, name in (("CONTAINERS_STORAGE_CONF", "storage.conf"), ("CONTAINERS_CONF", "containers.conf")):
        if var not in env and (store / name).is_file():
            env[var] = str(store / name)
    return env


def _probe(argv: list[str], timeout: float = 20.0) -> tuple[bool, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           env=builder_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    if r.returncode == 0:
        return True, r.stdout.strip()
    text = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return False, next((line.strip() for line in text if line.strip()), f"exit code {r.returncode}")


def _wanted_builders() -> tuple[str, ...]:
    """``ENGINE_IMAGE_BUILDER=podman`` (or docker, buildah) looks at that one only."""
    want = os.environ.get("ENGINE_IMAGE_BUILDER", "").strip()
    if not want:
        return BUILDERS
    if want not in BUILDERS:
        raise ConfigError(f"ENGINE_IMAGE_BUILDER={want!r} is not one of {', '.join(BUILDERS)}", "builder")
    return (want,)


def find_builder() -> tuple[str | None, list[str]]:
    """The first working local builder (``docker`` with buildx and a reachable engine, then
    ``podman``, then ``buildah``), and why each one looked at is unusable. A CLI on PATH is not
    enough: the docker CLI without a daemon cannot build, and ``podman info`` / ``buildah info``
    open the image store and find the runtime, which is what a build needs."""
    reasons = []
    for name in _wanted_builders():
        exe = shutil.which(name)
        label = "docker buildx" if name == "docker" else name
        if exe is None:
            reasons.append(f"{label}: `{name}` is not on PATH")
            continue
        if name == "docker":
            bx_ok, bx_why = _probe([exe, "buildx", "version"])
            info_ok, info_why = _probe([exe, "info", "--format", "{{.ServerVersion}}"])
            if bx_ok and info_ok:
                return name, reasons
            why = ([] if bx_ok else [f"`docker buildx version` failed: {bx_why}"]) + \
                  ([] if info_ok else [f"`docker info` failed: {info_why}"])
            reasons.append("docker buildx: " + "; ".join(why))
            continue
        ok, why = _probe([exe, "info"])
        if ok:
            return name, reasons
        reasons.append(f"{name}: `{name} info` failed: {why}")
    return None, reasons


def require_builder(builder: str = "local") -> str:
    if builder not in ("local", None):
        raise ConfigError(f"builder {builder!r} is not available: taskrig builds on this machine (builder='local')",
                          "builder")
    found, reasons = find_builder()
    if found is None:
        raise NoBuilder("no working image builder for builder='local'; looked for: " + "; ".join(reasons)
                        + ". Install and start Docker with the buildx plugin, or Podman or Buildah "
                          "(bash scripts/image-builder.sh); or render the Dockerfile "
                          "only with dry_run=True (engine image build --dry-run).")
    return found


def build_argv(tool: str, uri: str, context: Path, platform: Iterable[str] = ()) -> list[str]:
    """The build command. RUN steps share the host's network (``--network host``): no bridge
    or firewall rule is made for a build, and pip reaches the index the way the host does
    (podman and buildah pass the host's proxy variables into RUN steps)."""
    argv = {"docker": ["docker", "buildx", "build", "--load"],
            "podman": ["podman", "build", "--network", "host"],
            "buildah": ["buildah", "bud", "--network", "host"]}[tool]
    platform = list(platform)
    if platform:
        argv += ["--platform", ",".join(platform)]
    return argv + ["-t", uri, "-f", str(context / "Dockerfile"), str(context)]


def _inspect_argv(tool: str, uri: str, fmt: str = "{{.Id}}") -> list[str]:
    if tool == "buildah":
        return ["buildah", "inspect", "--type", "image", "--format", fmt.replace(".Id", ".FromImageID"), uri]
    return [tool, "image", "inspect", "--format", fmt, uri]


def image_id(tool: str, uri: str) -> str | None:
    """The image's id in ``tool``'s store, None if it has no such image."""
    ok, out = _probe(_inspect_argv(tool, uri), timeout=60)
    return out if ok else None


def image_label(tool: str, uri: str, label: str) -> str | None:
    """A label of the image in ``tool``'s store (buildah's --format has no json: its whole
    inspect document is read instead)."""
    if tool == "buildah":
        ok, out = _probe(["buildah", "inspect", "--type", "image", uri], timeout=60)
    else:
        ok, out = _probe(_inspect_argv(tool, uri, "{{json .Labels}}"), timeout=60)
    if not ok:
        return None
    try:
        doc = json.loads(out) or {}
    except ValueError:
        return None
    labels = (doc.get("OCIv1", {}).get("config", {}).get("Labels") if tool == "buildah" else doc) or {}
    return labels.get(label)


def remove_image(tool: str, uri: str) -> None:
    """Remove ``uri`` from ``tool``'s store; an image already gone is not an error."""
    argv = ["buildah", "rmi", uri] if tool == "buildah" else [tool, "image", "rm", uri]
    ok, why = _probe(argv, timeout=120)
    if not ok and not any(s in why.lower() for s in ("no such image", "image not known", "not found")):
        raise RuntimeError(f"`{' '.join(argv)}` failed: {why}")


def _failed_step(log: Path) -> str | None:
    """The last build step the log shows started: the one that failed."""
    steps = [line.strip() for line in log.read_text(errors="replace").splitlines() if _STEP_RE.match(line.strip())]
    return steps[-1] if steps else None


def _run_logged(argv: list[str], log: Path, prefix: str) -> int:
    """Run a build, every output line to ``log`` and, as progress, to stderr (never stdout:
    ``--json`` keeps stdout for its document)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=builder_env())
        for line in proc.stdout:
            out.write(line)
            out.flush()
            sys.stderr.write(f"{prefix}{line.decode(errors='replace').rstrip()}\n")
            sys.stderr.flush()
        return proc.wait()


def _registry_of(uri: str) -> str | None:
    """The registry host a uri names (Docker's rule: a first component with a '.' or a ':'),
    None for a local name; podman's local prefix ``localhost/`` is no registry."""
    first, sep, _ = uri.partition("/")
    return first if sep and ("." in first or ":" in first) else None


def archive_image(tool: str, uri: str, out: Path) -> Path:
    """Write ``uri`` from ``tool``'s store as a docker-archive (what ``ctr images import`` takes)."""
    argv = {"docker": ["docker", "save", "-o", str(out), uri],
            "podman": ["podman", "save", "--format", "docker-archive", "-o", str(out), uri],
            "buildah": ["buildah", "push", uri, f"docker-archive:{out}:{uri}"]}[tool]
    ok, why = _probe(argv, timeout=600)
    if not ok:
        raise RuntimeError(f"`{' '.join(argv[:2])} ...` could not write {uri} to {out}: {why}")
    return out


def load_archive(archive: Path, uri: str, label: str | None = None, value: str | None = None) -> str:
    """Load a docker-archive holding ``uri`` into the builder's store (the local base image),
    unless the store has it already (with ``label`` = ``value`` when given); the copy it
    replaces goes if nothing is built on it. Returns the builder's name."""
    tool = require_builder()
    old = image_id(tool, uri)
    if old is not None and (label is None or image_label(tool, uri, label) == value):
        return tool
    argv = ["buildah", "pull", f"docker-archive:{archive}"] if tool == "buildah" else [tool, "load", "-i", str(archive)]
    ok, why = _probe(argv, timeout=600)
    if not ok:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {why}")
    if image_id(tool, uri) is None:
        raise RuntimeError(f"{archive} loaded, but {tool} has no image {uri}: the archive holds another name")
    if old is not None and old != image_id(tool, uri):
        _probe(["buildah", "rmi", old] if tool == "buildah" else [tool, "image", "rm", old], timeout=120)
    return tool


def local_cluster_containerd() -> Path:
    """The containerd socket of the project's local cluster (scripts/localcluster/paths.py:
    ``TASKRIG_K8S_NODE``, else ``TASKRIG_K8S_CACHE`` or ~/.cache/taskrig-k8s, then node/)."""
    node = os.environ.get("TASKRIG_K8S_NODE")
    if not node:
        cache = os.environ.get("TASKRIG_K8S_CACHE") or \
            str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskrig-k8s")
        node = str(Path(cache) / "node")
    return Path(node) / "containerd" / "containerd.sock"


def cri_name(uri: str) -> str:
    """The name the kubelet asks containerd for when a pod says ``uri``: Docker's
    normalisation (``six:1`` is ``docker.io/library/six:1``), which podman's ``localhost/``
    naming of the same image does not match."""
    first, sep, _ = uri.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return uri
    return f"docker.io/{uri}" if sep else f"docker.io/library/{uri}"


def _archive_names(archive: Path) -> list[str]:
    import tarfile

    with tarfile.open(archive) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    return [t for m in manifest for t in m.get("RepoTags") or []]


def _ctr(sock: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    ctr = shutil.which("ctr")
    if ctr is None:
        raise EngineError("the local cluster's images need `ctr` (containerd's CLI), which is not on PATH")
    return subprocess.run([ctr, "--address", str(sock), "-n", "k8s.io", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _cluster_socket(uri: str, socket: Path | None) -> Path:
    sock = Path(socket or local_cluster_containerd())
    if not sock.exists():
        raise EngineError(f"no local cluster for {uri}: no containerd socket at {sock} "
                          f"(start one with scripts/local-cluster.sh start)")
    return sock


def load_into_local_cluster(uri: str, socket: Path | None = None) -> str:
    """Put a built image into the local cluster's containerd (namespace k8s.io, where the
    kubelet looks), so a pod naming ``uri`` with ``imagePullPolicy: Never`` (or IfNotPresent)
    runs it without a registry: saved by the builder as a docker-archive, imported with
    ``ctr``, tagged with the name the kubelet will ask for. Returns that name."""
    sock = _cluster_socket(uri, socket)
    tool = require_builder()
    tmp = image_store() / "exports"
    tmp.mkdir(parents=True, exist_ok=True)
    archive = tmp / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.docker.tar"
    want = cri_name(uri)
    try:
        archive_image(tool, uri, archive)
        names = _archive_names(archive)
        r = _ctr(sock, "images", "import", str(archive))
        if r.returncode != 0:
            raise EngineError(f"`ctr -n k8s.io images import` of {uri} failed: {(r.stderr or r.stdout).strip()}")
    finally:
        archive.unlink(missing_ok=True)
    if not names:
        raise EngineError(f"{tool} wrote {uri} without a name; the cluster cannot find it by {want}")
    if want not in names:
        r = _ctr(sock, "images", "tag", "--force", names[0], want, timeout=60)
        if r.returncode != 0:
            raise EngineError(f"`ctr images tag {names[0]} {want}` failed: {(r.stderr or r.stdout).strip()}")
    for other in set(names) - {want}:  # one name per image in the cluster: removing it removes it
        _ctr(sock, "images", "rm", other, timeout=60)
    return want


def remove_from_local_cluster(uri: str, socket: Path | None = None) -> None:
    """Remove what ``load_into_local_cluster(uri)`` imported; an image not there is no error
    (containerd keeps the layers of images other images still use)."""
    sock = _cluster_socket(uri, socket)
    r = _ctr(sock, "images", "rm", cri_name(uri), timeout=120)
    if r.returncode != 0 and "not found" not in (r.stderr + r.stdout).lower():
        raise EngineError(f"`ctr -n k8s.io images rm {cri_name(uri)}` failed: {(r.stderr or r.stdout).strip()}")


class LocalImage(Provider):
    """``image:index:Image``: an image in the local builder's store, named by its uri (and
    pushed to its registry when the uri names one)."""

    type_token = TYPE_TOKEN
    replace_keys = ("*",)  # any change is a new tag: a new image, never an edit of the old one
    refresh_on_up = True  # an image removed by hand is built again

    def _runtime(self) -> Path:
        return Path(self.context.runtime_dir if self.context else ".engine/runtime") / "images"

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        tool = require_builder()
        uri = inputs["uri"]
        self._runtime().mkdir(parents=True, exist_ok=True)
        ctx = self._runtime() / f"{inputs['tag']}.context"
        log = self._runtime() / f"{inputs['tag']}.log"
        shutil.rmtree(ctx, ignore_errors=True)
        t0 = time.monotonic()
        try:
            render_context(inputs, ctx)
            argv = build_argv(tool, uri, ctx, inputs["platform"])
            code = _run_logged(argv, log, f"[{tool} build {uri.rsplit('/', 1)[-1]}] ")
            if code != 0:
                step = _failed_step(log)
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"`{' '.join(argv[:2])}` of {uri} failed"
                                   + (f" at {step}" if step else " before its first step")
                                   + f" (exit code {code}); the build log ({log}) ends:\n{tail}")
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
        built = image_id(tool, uri)
        if built is None:
            raise RuntimeError(f"{tool} reported success but has no image {uri}")
        outputs = {"uri": uri, "image_id": built, "builder": tool, "build_seconds": round(time.monotonic() - t0, 1)}
        registry = _registry_of(uri)
        if registry:
            ok, why = _probe([tool, "push", uri], timeout=1800)
            if not ok:
                raise RuntimeError(f"built {uri}, but `{tool} push {uri}` to {registry} failed: {why}")
            outputs["pushed_to"] = registry
        return uri, outputs

    def read(self, id: str, inputs: dict, outputs: dict | None):
        tool, _ = find_builder()
        if tool is None:
            return outputs  # no builder to ask; unknown is not gone
        found = image_id(tool, inputs["uri"])
        if found is None:
            return None
        return {**(outputs or {}), "uri": inputs["uri"], "image_id": found, "builder": tool}

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        tool, _ = find_builder()
        if tool is None:
            return  # nothing here can hold it any more; the record goes
        remove_image(tool, inputs["uri"])


ProviderRegistry.register(LocalImage)


# ---------------------------------------------------------------------------------- the engine
@dataclass
class BuildResult:
    uri: str
    dockerfile: str
    plan: Plan | None
    built: bool


@dataclass
class BuildScope:
    """Settings for every ``ImageBuildEngine.build`` called inside ``ImageBuildEngine.scope``:
    how ``engine image build --dry-run`` previews a script that builds images itself."""

    dry_run: bool = False
    session: Any = None
    results: list[BuildResult] = field(default_factory=list)


_scope: contextvars.ContextVar[BuildScope | None] = contextvars.ContextVar("engine_image_scope", default=None)


class ImageBuildEngine:
    """Builds images (Flyte's ``flyte.extend.ImageBuildEngine``), through the engine's plan,
    journal and state."""

    @classmethod
    async def build(cls, image: Image, builder: str | None = "local", dry_run: bool = False, force: bool = False,
                    session: Any = None) -> str:
        """The image's uri, built unless the state says this very spec already is (``force``
        builds anyway). ``dry_run`` renders and plans, and builds nothing."""
        scope = _scope.get()
        if scope is not None:
            dry_run = dry_run or scope.dry_run
            session = session or scope.session
        result = await asyncio.to_thread(cls._build, image, builder or "local", dry_run, force, session)
        if scope is not None:
            scope.results.append(result)
        return result.uri

    @classmethod
    @contextlib.contextmanager
    def scope(cls, dry_run: bool = False, session: Any = None):
        """Every build inside uses these settings; yields the scope, whose ``results`` list
        what each build rendered and planned."""
        s = BuildScope(dry_run, session)
        token = _scope.set(s)
        try:
            yield s
        finally:
            _scope.reset(token)

    @staticmethod
    def declaration(image: Image) -> Declaration:
        return Declaration(urn=make_urn(STACK, TYPE_TOKEN, image.name), type=TYPE_TOKEN,
                           inputs={"uri": image.uri, "tag": image.tag, **image.spec()}, ephemeral=False,
                           physical_name=f"{STACK}-{image.name.replace('/', '.')}")

    @classmethod
    def _build(cls, image: Image, builder: str, dry_run: bool, force: bool, session) -> BuildResult:
        from .lifecycle import Session
        from .runs import recorded_run

        if not isinstance(image, Image):
            raise ConfigError(f"expected an engine.Image, got {type(image).__name__}", "image")
        if builder not in ("local",):
            raise ConfigError(f"builder {builder!r} is not available: taskrig builds on this machine "
                              f"(builder='local')", "builder")
        dockerfile = image.dockerfile()
        if not image.needs_build:
            return BuildResult(image.uri, dockerfile, None, False)
        session = session or Session()
        decl = cls.declaration(image)
        if force:  # the same uri again: the old image must go before the new one takes its name
            decl = dataclasses.replace(decl, options=Options(delete_before_replace=True))
        planned = cls._preview(session, decl, force)
        if dry_run:
            return BuildResult(image.uri, dockerfile, planned, False)
        if planned.has_changes:
            require_builder(builder)  # before the state is touched: the error says what was looked for
        state = session.open_state()
        try:
            with session.lock(STACK, f"image build {image.name}"):
                session.recover(state, STACK)
                plan = cls._plan(session, state, decl, force, write=True)
                session.reporter.plan(plan, "up")
                if not plan.has_changes:
                    return BuildResult(image.uri, dockerfile, plan, False)
                with recorded_run(state, STACK, f"image build {image.uri}", kind="build",
                                  outputs={"uri": image.uri}) as run_id:
                    session._applier(state, STACK, run_id).apply(plan)
                return BuildResult(image.uri, dockerfile, plan, True)
        finally:
            state.close()

    @classmethod
    def _preview(cls, session, decl: Declaration, force: bool) -> Plan:
        if not session.state_path.exists():
            return make_plan(STACK, [decl], [], {}, prune=False)
        state = session.open_state()
        try:
            return cls._plan(session, state, decl, force, write=False)
        finally:
            state.close()

    @staticmethod
    def _plan(session, state, decl: Declaration, force: bool, write: bool) -> Plan:
        """This image against its record only: other images of the stack are not pruned."""
        recorded = [r for r in state.resources(STACK) if r.urn == decl.urn]
        if recorded and not force:
            r = session._refresh_one(state, recorded[0], write=write)
            recorded = [r] if r is not None else []
        elif recorded and force:  # shown in the plan as what forces the replacement
            recorded = [dataclasses.replace(recorded[0], inputs={**recorded[0].inputs, "force_rebuild": True})]
        diffs = {r.urn: session.provider(r.type).diff(r.inputs, decl.inputs) for r in recorded}
        return make_plan(STACK, [decl], recorded, diffs, prune=False)
