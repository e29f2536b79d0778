"""Container images built without a container engine, as docker-archive tars for containerd.

The node has no registry and no Docker, so images are written here as `docker save` archives
and loaded with ``ctr -n k8s.io images import``. Two kinds:

* the pause (sandbox) image: Kubernetes' own pause.c, compiled static, one file;
* the task image ("host-copy"): the host's own Python interpreter, its stdlib, the shared
  libraries they load, and the site-packages of the distributions a task needs. Pods then run
  the very interpreter and package versions the host runs, so pickled tasks unpickle as-is.

Layers are deterministic (sorted entries, uid/gid 0, mtime 0), so an image's digest depends on
its content only; archives are cached in ``paths.IMAGES`` under a name derived from their inputs.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Union

from . import paths
from .host import ClusterError, ensure_packages, log, run

# Part of every cache key: bump it when what goes into an image changes.
FORMAT = "taskrig-images-1"
EPOCH = "1970-01-01T00:00:00Z"  # layers have mtime 0; the config says so too, for a stable digest
CONFIG_KEYS = ("Env", "Entrypoint", "Cmd", "User", "WorkingDir", "Labels")
PAUSE_CFLAGS = ("-Os", "-Wall", "-static", "-DVERSION=v3.4.1-taskrig")
TASK_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1")
DYNAMIC_LOADER = "/lib64/ld-linux-x86-64.so.2"
# glibc dlopen()s libgcc_s for pthread_exit/pthread_cancel; ldd cannot see that, and Python
# calls pthread_exit when a daemon thread outlives finalization (dask has many).
DLOPENED = ("libgcc_s.so.1",)
STDLIB_SKIP_TOP = frozenset({"test", "idlelib", "site-packages", "dist-packages"})
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")


# ------------------------------------------------------------------------------------ rootfs tree
class Entry(NamedTuple):
    """One member of a layer: a directory, a symlink, or a file copied from the host or literal."""
    kind: str  # "dir" | "file" | "link"
    mode: int = 0o755
    src: str | None = None  # host file whose bytes go in (kind "file")
    data: bytes | None = None  # literal bytes instead (kind "file")
    target: str | None = None  # symlink target (kind "link")
    stamp: str = ""  # what the cache key sees: size:mtime_ns of src, sha256 of data


def _key(path: str | PurePosixPath) -> str:
    """Image paths are kept relative to the root, as tar member names are."""
    return str(PurePosixPath("/", path).relative_to("/"))


class Tree:
    """A root filesystem to be written as one layer: image path -> Entry.

    Built in memory from host paths, so 100+ MB of files are read once, into the layer, and
    never staged in a copy of the tree.
    """

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    # -- adding
    def _put(self, path: str, entry: Entry) -> None:
        path = _key(path)
        if path == ".":
            return
        self._parents(path)
        old = self.entries.get(path)
        if old is not None and (old.kind == "dir") != (entry.kind == "dir"):
            raise ClusterError(f"image path /{path}: a {old.kind} and a {entry.kind}")
        self.entries[path] = entry

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path).parents[:-1]):
            p = str(parent)
            e = self.entries.get(p)
            if e is None:
                self.entries[p] = Entry("dir", 0o755)
            elif e.kind != "dir":
                raise ClusterError(f"image path /{p} is a {e.kind}, but /{path} is under it")

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._put(path, Entry("dir", mode))

    def link(self, path: str, target: str) -> None:
        self._put(path, Entry("link", 0o777, target=target, stamp=target))

    def data(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._put(path, Entry("file", mode, data=data, stamp=hashlib.sha256(data).hexdigest()))

    def file(self, path: str, src: str | os.PathLike, st: os.stat_result | None = None,
             mode: int | None = None) -> None:
        st = st or os.stat(src)
        mode = stat.S_IMODE(st.st_mode) if mode is None else mode
        self._put(path, Entry("file", mode, src=os.fspath(src),
                              stamp=f"{st.st_size}:{st.st_mtime_ns}"))

    def copy(self, src: str | os.PathLike, dest: str,
             skip: Callable[[PurePosixPath], bool] = lambda rel: False) -> None:
        """Copy a host file or directory tree to ``dest``: symlinks kept as symlinks, hardlinks
        as regular files, sockets/devices/fifos left out. ``skip(rel)`` prunes by relative path."""
        src = os.fspath(src)
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode):
            self._copy_one(src, dest, st)
            return
        self.dir(dest, stat.S_IMODE(st.st_mode))
        for root, dirs, files in os.walk(src):
            rel_root = PurePosixPath(os.path.relpath(root, src))
            kept = []
            for name in sorted(dirs + files):
                rel = rel_root / name
                if skip(rel):
                    continue
                full = os.path.join(root, name)
                st = os.lstat(full)
                self._copy_one(full, f"{dest}/{rel}", st)
                if stat.S_ISDIR(st.st_mode):
                    kept.append(name)
            dirs[:] = kept  # os.walk does not descend into symlinked dirs, nor into skipped ones

    def _copy_one(self, full: str, dest: str, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            self.link(dest, os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            self.dir(dest, stat.S_IMODE(st.st_mode))
        elif stat.S_ISREG(st.st_mode):
            self.file(dest, full, st)

    def host(self, path: str) -> None:
        """Copy a host file to its own path, recreating every symlink on the way (/lib ->
        usr/lib, libz.so.1 -> libz.so.1.2.13), so the loader finds it where ldd found it."""
        for _ in range(40):
            link, rest = _first_link(path)
            if link is None:
                self.file(path, path)
                return
            target = os.readlink(link)
            self.link(link, target)
            path = os.path.normpath(os.path.join(os.path.dirname(link), target, rest))
        raise ClusterError(f"too many levels of symlinks: {path}")

    # -- reading
    def sources(self) -> set[str]:
        """The host files copied, by real path."""
        return {os.path.realpath(e.src) for e in self.entries.values() if e.src}

    def digest(self, *extra: str) -> str:
        h = hashlib.sha256()
        for x in extra:
            h.update(x.encode() + b"\0")
        for path in sorted(self.entries):
            e = self.entries[path]
            h.update(f"{path}\0{e.kind}\0{e.mode:o}\0{e.stamp}\n".encode())
        return h.hexdigest()

    def write(self, tf: tarfile.TarFile) -> None:
        for path in sorted(self.entries):  # a parent sorts before its children
            e = self.entries[path]
            ti = _tarinfo(path, e.mode)
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif e.kind == "link":
                ti.type, ti.linkname = tarfile.SYMTYPE, e.target
                tf.addfile(ti)
            elif e.data is not None:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                with open(e.src, "rb") as f:
                    ti.size = os.fstat(f.fileno()).st_size
                    tf.addfile(ti, f)


def _first_link(path: str) -> tuple[str | None, str]:
    """The first component of an absolute host path that is a symlink, and the rest after it."""
    parts = PurePosixPath(path).parts
    for i in range(2, len(parts) + 1):
        prefix = os.path.join(*parts[:i])
        if os.path.islink(prefix):
            return prefix, os.path.join(*parts[i:]) if i < len(parts) else ""
    return None, ""


def _tarinfo(name: str, mode: int) -> tarfile.TarInfo:
    """Numeric owner root, mtime 0: the same files always make the same bytes."""
    ti = tarfile.TarInfo(name)
    ti.mode, ti.mtime = mode, 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


# ------------------------------------------------------------------------------- docker-archive
LayerSource = Union[Path, Callable[[tarfile.TarFile], None]]


def write_docker_archive(out: Path, tag: str, layer_dirs_or_tars: Iterable[LayerSource],
                         config: dict) -> Path:
    """Write a `docker save` archive of ``tag`` to ``out``, atomically.

    Each layer is a directory (tarred deterministically), an uncompressed tar file (taken as
    is), or a callable that adds members to an open TarFile (how Tree writes). ``config`` gives
    the image's Env/Entrypoint/Cmd/User/WorkingDir/Labels.
    """
    bad = set(config) - set(CONFIG_KEYS)
    if bad:
        raise ValueError(f"unknown image config keys {sorted(bad)}; known: {CONFIG_KEYS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    layers: list[tuple[str, str]] = []  # (diff id hex, tar file)
    try:
        for source in layer_dirs_or_tars:
            layers.append(_layer_file(source, out.parent))
        _write_archive(Path(tmp), tag, layers, config)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, out)
    finally:
        for _, f in layers:
            if not isinstance(f, Path):
                os.unlink(f)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _layer_file(source: LayerSource, workdir: Path) -> tuple[str, str | Path]:
    """(sha256 of the uncompressed layer, its file): a Path for a given tar, a str for a temp."""
    if isinstance(source, Path) and source.is_file():
        with open(source, "rb") as f:
            if f.read(6).startswith(COMPRESSED_MAGIC):
                raise ValueError(f"{source}: layers must be uncompressed tars (diff_ids hash those)")
        return _sha256_file(source), source
    if isinstance(source, Path):
        if not source.is_dir():
            raise FileNotFoundError(source)
        tree = Tree()
        tree.copy(source, "")
        source = tree.write
    fd, tmp = tempfile.mkstemp(prefix=".layer.", suffix=".tar", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
            source(tf)
        return _sha256_file(tmp), tmp
    except BaseException:
        os.unlink(tmp)
        raise


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _image_config(config: dict, diff_ids: list[str]) -> bytes:
    body = {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": {k: config[k] for k in CONFIG_KEYS if config.get(k) is not None},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": EPOCH, "created_by": "taskrig localcluster/images.py"} for _ in diff_ids],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _write_archive(tmp: Path, tag: str, layers: list[tuple[str, str | Path]], config: dict) -> None:
    cfg = _image_config(config, [d for d, _ in layers])
    cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
    manifest = [{"Config": cfg_name, "RepoTags": [tag], "Layers": [f"{d}/layer.tar" for d, _ in layers]}]
    repo, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    repositories = {repo: {version: layers[-1][0]}} if layers else {}
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for digest, f in layers:
            tf.addfile(_dir_info(digest))
            ti = _file_info(f"{digest}/layer.tar", os.path.getsize(f))
            with open(f, "rb") as src:
                tf.addfile(ti, src)
        for name, data in ((cfg_name, cfg), ("manifest.json", json.dumps(manifest).encode()),
                           ("repositories", json.dumps(repositories).encode())):
            tf.addfile(_file_info(name, len(data)), io.BytesIO(data))


def _dir_info(name: str) -> tarfile.TarInfo:
    ti = _tarinfo(name, 0o755)
    ti.type = tarfile.DIRTYPE
    return ti


def _file_info(name: str, size: int) -> tarfile.TarInfo:
    ti = _tarinfo(name, 0o644)
    ti.size = size
    return ti


# -------------------------------------------------------------------------------- pause image
def pause_image() -> Path:
    """The sandbox image (paths.PAUSE_IMAGE) from the pause.c kept by the build; cached by the
    source's content, so it is compiled once per pause.c."""
    src = paths.SRC / "pause.c"
    if not src.is_file():
        raise ClusterError(f"{src} is missing: run `scripts/local-cluster.sh build` first")
    digest = hashlib.sha256("\0".join((FORMAT, *PAUSE_CFLAGS, "")).encode() + src.read_bytes()).hexdigest()
    out = paths.IMAGES / f"pause-{digest[:16]}.docker.tar"
    if out.is_file():
        return out
    ensure_packages("gcc", "libc6-dev")
    paths.IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pause.", dir=paths.IMAGES) as tmp:
        exe = Path(tmp) / "pause"
        run(["gcc", *PAUSE_CFLAGS, "-o", exe, src], timeout=120)
        run(["strip", exe], timeout=60)
        tree = Tree()
        tree.file("pause", exe, mode=0o755)
        write_docker_archive(out, paths.PAUSE_IMAGE, [tree.write],
                             {"User": "65535:65535", "Entrypoint": ["/pause"]})
    log(f"pause image {paths.PAUSE_IMAGE}: {out} ({out.stat().st_size // 1024} KiB)")
    return out


# ---------------------------------------------------------------------------------- task image
class Python(NamedTuple):
    """Where the host interpreter keeps itself; the image keeps the same paths."""
    exe: str  # real path of the interpreter
    version: str  # "3.11"
    stdlib: str
    platstdlib: str
    site: str  # the site-packages dir the interpreter itself puts on sys.path


def host_python() -> Python:
    """Ask the interpreter behind sys.executable (outside any venv, -I) for its own layout:
    Debian's puts /usr/local/lib/python3.X/dist-packages on sys.path, a pyenv or
    python.org build PREFIX/lib/python3.X/site-packages."""
    exe = os.path.realpath(sys.executable)
    code = ("import json, site, sys, sysconfig; print(json.dumps([sys.version_info[:2], "
            "sysconfig.get_path('stdlib'), sysconfig.get_path('platstdlib'), site.getsitepackages()]))")
    ver, stdlib, platstdlib, sites = json.loads(run([exe, "-I", "-c", code], timeout=60).stdout)
    if not sites:
        raise ClusterError(f"{exe} has no site-packages directory")
    return Python(exe, f"{ver[0]}.{ver[1]}", os.path.realpath(stdlib), os.path.realpath(platstdlib), sites[0])


def _stdlib_skip(rel: PurePosixPath) -> bool:
    """Tests, IDLE, the interpreter's own site-packages, bytecode and static libpython stay out."""
    return (rel.parts[0] in STDLIB_SKIP_TOP or rel.name == "__pycache__" or rel.suffix == ".a")


def _no_bytecode(rel: PurePosixPath) -> bool:
    # With mtime 0 in the layer every .pyc would be stale anyway.
    return rel.name == "__pycache__" or rel.suffix == ".pyc"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_closure(names: Iterable[str]):
    """The installed distributions ``names`` need, with their dependencies, transitively.

    Markers are evaluated for this interpreter with extra="" (plus any extras a requirement
    asks for), so extras-only dependencies stay out. Returns {canonical name: Distribution}.
    """
    from importlib.metadata import distributions

    try:
        from packaging.requirements import Requirement
    except ImportError as e:
        raise ClusterError("building the task image needs `packaging` in the interpreter running it") from e
    installed = {}
    for d in distributions():  # first on sys.path wins, as for imports
        installed.setdefault(_canonical(d.metadata["Name"] or ""), d)
    asked = {_canonical(n) for n in names}
    todo = [(n, frozenset()) for n in sorted(asked)]
    done: dict[str, set] = {}
    while todo:
        name, extras = todo.pop()
        if name not in installed:
            if name in asked:
                raise ClusterError(f"distribution {name!r} is not installed in {sys.prefix}")
            log(f"task image: {name} is required but not installed; left out")
            continue
        if name in done and extras <= done[name]:
            continue
        done.setdefault(name, set()).update(extras)
        for line in installed[name].requires or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((_canonical(req.name), frozenset(req.extras)))
    return {n: installed[n] for n in sorted(done)}


def _editable_targets(dist, pth: Path) -> list[Path]:
    """What an editable install's .pth puts on the import path: the packages of a setuptools
    ``__editable__`` finder (its MAPPING), or, for a path line, the dist's top-level names there."""
    targets = []
    for line in pth.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("import ", "import\t")):
            m = re.match(r"import\s+([\w.]+)", line)
            finder = pth.parent / f"{m.group(1)}.py"
            targets += [Path(p) for p in _finder_mapping(finder).values()]
        else:
            top = (dist.read_text("top_level.txt") or "").split()
            if not top:
                raise ClusterError(f"{pth}: cannot tell which packages {line} holds (no top_level.txt)")
            base = pth.parent / line
            targets += [p for n in top for p in (base / n, base / f"{n}.py") if p.exists()]
    return targets


def _finder_mapping(finder: Path) -> dict[str, str]:
    """setuptools' editable finder module keeps ``MAPPING = {top-level name: path}``; read it
    with ast rather than importing it."""
    for node in ast.parse(finder.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "MAPPING":
            return ast.literal_eval(node.value)
    raise ClusterError(f"{finder}: no MAPPING in this editable finder")


def _add_distribution(tree: Tree, dist, site: str) -> None:
    """The files a distribution installed under its site dir (scripts in bin/ are left out:
    console scripts are rewritten for the image), or, if editable, what its .pth points at."""
    if dist.files is None:
        raise ClusterError(f"{dist.metadata['Name']}: no RECORD, cannot tell which files it installed")
    base = Path(dist.locate_file("")).resolve()
    for f in dist.files:
        src = Path(dist.locate_file(f))
        try:
            rel = PurePosixPath(src.resolve().relative_to(base).as_posix())
        except ValueError:
            continue  # ../../../bin/NAME and the like
        if _no_bytecode(rel) or any(p == "__pycache__" for p in rel.parts) or not src.is_file():
            continue
        if rel.name.startswith("__editable__"):
            if rel.suffix == ".pth":
                for target in _editable_targets(dist, src):
                    tree.copy(target, f"{site}/{target.name}", _no_bytecode)
            continue
        tree.file(f"{site}/{rel}", src)


def _add_bytecode(tree: Tree) -> int:
    """The host's own .pyc of every copied .py that has a fresh one, its source mtime set to
    the layer's 0 so the image's interpreter takes it; saves recompiling on every start."""
    from importlib.util import MAGIC_NUMBER, cache_from_source

    added = 0
    for path, e in list(tree.entries.items()):
        if not (e.src and path.endswith(".py")):
            continue
        try:
            pyc = Path(cache_from_source(e.src)).read_bytes()
            st = os.stat(e.src)
        except (OSError, ValueError):
            continue
        magic, flags, mtime, size = pyc[:4], *struct.unpack_from("<III", pyc, 4)
        if (magic == MAGIC_NUMBER and flags == 0 and mtime == int(st.st_mtime) & 0xFFFFFFFF
                and size == st.st_size & 0xFFFFFFFF):
            tree.data(cache_from_source("/" + path), pyc[:8] + bytes(4) + pyc[12:])
            added += 1
    return added


def _console_scripts(tree: Tree, dists, python: str) -> None:
    """What pip would write to bin/, pointing at the image's interpreter (dask's pods run
    ``dask scheduler`` and ``dask worker``)."""
    for dist in dists:
        for ep in dist.entry_points:
            if ep.group != "console_scripts":
                continue
            head = ep.attr.split(".")[0]
            # the guard as pip writes it: a nanny starts its worker with multiprocessing's
            # "spawn", which runs this main script again in the child
            body = (f"#!{python}\nimport sys\nfrom {ep.module} import {head}\n"
                    f"if __name__ == \"__main__\":\n    sys.exit({ep.attr}())\n")
            tree.data(f"usr/local/bin/{ep.name}", body.encode(), 0o755)


def _etc(tree: Tree) -> None:
    tree.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                            b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    tree.data("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    tree.data("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    tree.dir("tmp", 0o1777)
    # 0700 as usual, unless the interpreter lives under it (pyenv): then other users need to pass
    tree.dir("root", 0o755 if any(p.startswith("root/") for p in tree.entries) else 0o700)


def _python_links(tree: Tree, py: Python) -> None:
    exe = _key(py.exe)
    for d in ("usr/bin", "usr/local/bin"):
        for name in ("python3", "python", f"python{py.version}"):
            if f"{d}/{name}" != exe:
                tree.link(f"{d}/{name}", py.exe)


def _shared_objects(tree: Tree) -> list[str]:
    return sorted({e.src for p, e in tree.entries.items()
                   if e.src and re.search(r"\.so(\.|$)", PurePosixPath(p).name)})


LDD_LIB = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found")


def ldd_closure(files: list[str], chunk: int = 64) -> tuple[set[str], list[str]]:
    """The libraries the dynamic loader resolves for ``files`` (transitively, as ldd reports
    them), and the ``file: lib`` pairs it could not find."""
    libs, missing = set(), []
    for i in range(0, len(files), chunk):
        batch = files[i:i + chunk]
        r = run(["ldd", *batch], check=False, timeout=300)  # exits 1 for static files
        current = batch[0]
        for line in r.stdout.splitlines():
            if not line.startswith(("\t", " ")) and line.endswith(":"):
                current = line[:-1]
            elif m := LDD_LIB.match(line):
                libs.add(m.group(1))
            elif m := LDD_MISSING.match(line):
                missing.append(f"{current}: {m.group(1)}")
    return libs, missing


def _dlopened_libs() -> list[str]:
    """Where the loader cache has DLOPENED for x86-64."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    out = run([ldconfig, "-p"], check=False).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+\((.*?)\)\s+=>\s+(\S+)", line)
        if m and m.group(1) in DLOPENED and "x86-64" in m.group(2):
            found.setdefault(m.group(1), m.group(3))
    return list(found.values())


def _add_libraries(tree: Tree, py: Python, executables: Iterable[str] = ()) -> None:
    """Every shared library the interpreter, ``executables`` and any .so in the tree load, at
    their host paths."""
    copied = tree.sources()
    libs, missing = ldd_closure([py.exe, *executables, *_shared_objects(tree)])
    for m in missing:
        log(f"task image: ldd: {m} => not found (that module fails on this host too)")
    for lib in sorted(libs | {DYNAMIC_LOADER, *_dlopened_libs()}):
        if os.path.realpath(lib) not in copied:  # vendored ones (numpy.libs/...) came with their package
            tree.host(lib)


def task_tree(distributions: list[str], extra_paths: Iterable[Path] = (),
              bytecode: bool = False, host_files: Iterable[str] = ()) -> tuple[Tree, Python]:
    """The task image's root filesystem, in memory; ``host_files`` (e.g. /bin/sh) are copied
    to their own paths, symlinks on the way kept, with the libraries they load."""
    py = host_python()
    tree = Tree()
    tree.host(py.exe)
    tree.copy(py.stdlib, py.stdlib, _stdlib_skip)
    if py.platstdlib != py.stdlib:
        tree.copy(py.platstdlib, py.platstdlib, _stdlib_skip)
    tree.dir(py.site)
    dists = distribution_closure(distributions).values()
    for dist in dists:
        _add_distribution(tree, dist, py.site)
    for p in extra_paths:
        tree.copy(Path(p), f"{py.site}/{Path(p).name}", _no_bytecode)
    if bytecode:
        _add_bytecode(tree)
    _console_scripts(tree, dists, "/usr/bin/python3")
    _python_links(tree, py)
    for f in host_files:
        tree.host(f)
    _add_libraries(tree, py, [os.path.realpath(f) for f in host_files])
    _etc(tree)
    return tree, py


def task_image(distributions: list[str], extra_paths: Iterable[Path] = (),
               bytecode: bool = False) -> tuple[str, Path]:
    """The "host-copy" Python image for a task needing ``distributions`` (plus their
    dependencies) and ``extra_paths`` (copied into site-packages). Content-addressed: the same
    host files give the same tag, and its archive is only written once. ``bytecode`` adds the
    host's fresh .pyc files: a bigger image, but `import distributed` in a pod takes ~1 s
    instead of ~4 s of compiling.

    Returns (tag, archive path).
    """
    t0 = time.monotonic()
    tree, _ = task_tree(list(distributions), list(extra_paths), bytecode)
    config = {"Env": list(TASK_ENV), "Cmd": ["python3"]}
    digest = tree.digest(FORMAT, json.dumps(config, sort_keys=True))
    tag = f"localhost/taskrig-task:{digest[:12]}"
    out = paths.IMAGES / f"taskrig-task-{digest[:12]}.docker.tar"
    if out.is_file():
        log(f"task image {tag}: cached ({out}, {time.monotonic() - t0:.1f} s)")
        return tag, out
    write_docker_archive(out, tag, [tree.write], config)
    log(f"task image {tag}: {len(tree.entries)} entries, {out.stat().st_size / 1e6:.0f} MB "
        f"in {time.monotonic() - t0:.1f} s ({out})")
    _prune("taskrig-task-*.docker.tar", keep=KEEP_TASK_IMAGES)
    return tag, out


# The base for Dockerfiles built here: what python:3.X-slim is elsewhere, without a registry.
BASE_ENV = (*TASK_ENV, "PYTHONUNBUFFERED=1", "PIP_DISABLE_PIP_VERSION_CHECK=1")
BASE_DISTRIBUTIONS = ("pip",)
BASE_HOST_FILES = ("/bin/sh",)  # a Dockerfile's RUN runs `/bin/sh -c` (dash on Debian: needs only libc)
# The host's trust store, where OpenSSL (and so pip) looks by default: a build's pip then trusts
# what the host trusts, a TLS-inspecting proxy's CA included.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BASE_DIGEST_LABEL = "dev.taskrig.base.digest"


def base_image_name(version: str | None = None) -> str:
    """``localhost/taskrig-python:3.11``: one name per Python version, so a Dockerfile's FROM
    line stays the same when the host's files change (the label says which content it is)."""
    return f"localhost/taskrig-python:{version or '%d.%d' % sys.version_info[:2]}"


def python_base_image() -> tuple[str, Path, str]:
    """The host-copy Python with pip and nothing else, as a ``FROM`` for image builds on a
    machine with no registry: ``RUN python -m pip install ...`` works in it (pip reaches the
    index the build's network does). Cached like the task image, by content.

    Returns (name, archive path, content digest), the digest also in the image's labels.
    """
    t0 = time.monotonic()
    tree, py = task_tree(list(BASE_DISTRIBUTIONS), host_files=BASE_HOST_FILES)
    if os.path.isfile(CA_BUNDLE):
        tree.host(CA_BUNDLE)
    name = base_image_name(py.version)
    config = {"Env": list(BASE_ENV), "Cmd": ["python3"], "WorkingDir": "/root"}
    digest = tree.digest(FORMAT, name, json.dumps(config, sort_keys=True))[:12]
    config["Labels"] = {BASE_DIGEST_LABEL: digest}
    out = paths.IMAGES / f"taskrig-python-{py.version}-{digest}.docker.tar"
    if out.is_file():
        log(f"base image {name}: cached ({out}, {time.monotonic() - t0:.1f} s)")
        return name, out, digest
    write_docker_archive(out, name, [tree.write], config)
    log(f"base image {name}: {len(tree.entries)} entries, {out.stat().st_size / 1e6:.0f} MB "
        f"in {time.monotonic() - t0:.1f} s ({out})")
    _prune(f"taskrig-python-{py.version}-*.docker.tar", keep=KEEP_TASK_IMAGES)
    return name, out, digest


KEEP_TASK_IMAGES = 3  # each edit of the engine makes a new one (~240 MB): the newest few stay


def _prune(pattern: str, keep: int) -> None:
    """The cache keeps the ``keep`` newest archives (a checkout alternating with another
    rebuilds in seconds); older ones would only fill the disk."""
    found = sorted(paths.IMAGES.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[keep:]:
        old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ containerd
def import_image(archive: Path, containerd_socket: Path, ctr: str = "ctr") -> None:
    """Load an archive into the k8s.io namespace, where the kubelet's CRI looks; ctr unpacks it
    for the default snapshotter, so pods start without a pull."""
    run([ctr, "--address", containerd_socket, "-n", "k8s.io", "images", "import", archive], timeout=600)


def image_present(tag: str, containerd_socket: Path, ctr: str = "ctr") -> bool:
    r = run([ctr, "--address", containerd_socket, "-n", "k8s.io", "images", "ls", "-q"], timeout=60)
    return tag in r.stdout.split()
