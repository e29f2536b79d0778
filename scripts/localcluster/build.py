"""Build the node's binaries once from Debian 12's `kubernetes` source package.

kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl come
from one source tree (vendored Go modules, Debian's Go 1.19, no network during the build);
etcd from the `etcd-server` binary package. The vendored reflect2 1.0.1 crashes the API server
on its first custom-resource write when built with Go >= 1.18, so Debian's reflect2 1.0.2
replaces it. About 10 minutes on 2 cores, once; the result is cached under ~/.cache.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import paths
from .host import ClusterError, ensure_packages, log, run

BUILD_PACKAGES = ("golang-go", "dpkg-dev", "make", "rsync", "openssl", "gcc", "libc6-dev")


def built() -> bool:
    """Every binary present and runnable, and the pause source kept."""
    for b in paths.BINARIES:
        exe = paths.BIN / b
        if not os.access(exe, os.X_OK):
            return False
    if not os.access(paths.BIN / "etcd", os.X_OK) or not (paths.SRC / "pause.c").is_file():
        return False
    r = run([paths.BIN / "kube-apiserver", "--version"], check=False)
    return r.returncode == 0 and r.stdout.startswith("Kubernetes v1.")


def _sources_with_src(apt_dir: Path) -> None:
    """A private apt configuration from the system's enabled sources, each for deb and deb-src,
    so `apt-get source` works without touching the system's own apt state."""
    (apt_dir / "sources.list.d").mkdir(parents=True)
    (apt_dir / "lists" / "partial").mkdir(parents=True)
    (apt_dir / "cache" / "archives" / "partial").mkdir(parents=True)
    out = run(["apt-config", "shell", "SL", "Dir::Etc::SourceList/f", "SP", "Dir::Etc::SourceParts/d"]).stdout
    cfg = dict(re.findall(r"(\w+)='([^']*)'", out))
    lines = []
    for f in [cfg.get("SL", "/etc/apt/sources.list"), *sorted(glob.glob(cfg.get("SP", "/etc/apt/sources.list.d/") + "*.list"))]:
        if os.path.isfile(f):
            for line in Path(f).read_text().splitlines():
                words = line.split()
                if words and words[0] == "deb":
                    lines += [line, "deb-src" + line[3:]]
    (apt_dir / "sources.list").write_text("\n".join(lines) + "\n")
    for f in sorted(glob.glob(cfg.get("SP", "/etc/apt/sources.list.d/") + "*.sources")):
        stanzas, out_st = Path(f).read_text().split("\n\n"), []
        for st in stanzas:
            body = [ln for ln in st.splitlines() if ln.strip() and not ln.startswith("#")]
            low = [ln.lower().replace(" ", "") for ln in body]
            if not body or any(ln in ("enabled:no", "enabled:false") for ln in low):
                continue
            out_st.append("\n".join("Types: deb deb-src" if ln.lower().startswith("types:") else ln for ln in body))
        (apt_dir / "sources.list.d" / os.path.basename(f)).write_text("\n\n".join(out_st) + "\n")


def build(force: bool = False) -> None:
    paths.CACHE.mkdir(parents=True, exist_ok=True)
    with open(paths.CACHE / ".build.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build ({paths.CACHE / '.build.lock'})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if built() and not force:
            log(f"cached: {paths.BIN} ({(paths.BIN / 'BUILDINFO').read_text().splitlines()[-1]})")
            return
        _build()


def _build() -> None:
    t0 = time.monotonic()
    ensure_packages(*BUILD_PACKAGES)
    work = paths.CACHE / "build"
    if work.exists():
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work)
    for d in ("src", "debs", "x", "home"):
        (work / d).mkdir(parents=True)
    _sources_with_src(work / "apt")
    a = work / "apt"
    apt = ["apt-get", "-q", f"-oDir::Etc::SourceList={a}/sources.list", f"-oDir::Etc::SourceParts={a}/sources.list.d",
           f"-oDir::State::Lists={a}/lists", f"-oDir::Cache={a}/cache"]
    if os.geteuid() == 0:
        apt.append("-oAPT::Sandbox::User=root")
    log("apt-get update (private lists), source kubernetes, download etcd-server and reflect2")
    run([*apt, "update"], check=False, timeout=900)
    run([*apt, "source", "kubernetes"], cwd=work / "src", timeout=1800)
    run([*apt, "download", "etcd-server", "golang-github-modern-go-reflect2-dev"], cwd=work / "debs", timeout=900)
    for deb in (work / "debs").glob("*.deb"):
        run(["dpkg-deb", "-x", deb, work / "x"])
    src = next((p for p in (work / "src").iterdir() if p.is_dir() and p.name.startswith("kubernetes-")), None)
    if src is None or not (src / "Makefile").is_file():
        raise ClusterError(f"no kubernetes source tree under {work / 'src'}")
    r2 = work / "x/usr/share/gocode/src/github.com/modern-go/reflect2"
    vr2 = src / "vendor/github.com/modern-go/reflect2"
    new = [f for f in r2.iterdir() if f.suffix in (".go", ".s") and not f.name.endswith("_test.go")]
    if not new:
        raise ClusterError("reflect2 sources not found in golang-github-modern-go-reflect2-dev")
    for f in vr2.iterdir():
        if f.suffix in (".go", ".s"):
            f.unlink()
    for f in new:
        shutil.copy(f, vr2 / f.name)

    gobin = Path(os.path.realpath(shutil.which("go") or "/usr/lib/go-1.19/bin/go")).parent
    what = " ".join(f"cmd/{b}" for b in paths.BINARIES)
    log(f"make WHAT='{what}' (about 10 minutes on 2 cores, once; log {work / 'make.log'})")
    t = time.monotonic()
    env = {"PATH": f"{gobin}:{os.environ['PATH']}", "HOME": str(work / "home"), "GOPROXY": "off",
           "GOSUMDB": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "", "CGO_ENABLED": "0"}
    with open(work / "make.log", "w") as out:
        rc = subprocess.run(["nice", "-n", "19", "make", f"WHAT={what}"], cwd=src, stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **env}).returncode
    if rc != 0:
        tail = "\n".join((work / "make.log").read_text(errors="replace").splitlines()[-30:])
        raise ClusterError(f"the kubernetes build failed (log {work / 'make.log'}):\n{tail}")
    make_s = time.monotonic() - t
    paths.BIN.mkdir(parents=True, exist_ok=True)
    paths.SRC.mkdir(parents=True, exist_ok=True)
    for b in paths.BINARIES:
        shutil.copy(src / "_output/bin" / b, paths.BIN / f".{b}.tmp")
        os.replace(paths.BIN / f".{b}.tmp", paths.BIN / b)
    shutil.copy(work / "x/usr/bin/etcd", paths.BIN / ".etcd.tmp")
    os.replace(paths.BIN / ".etcd.tmp", paths.BIN / "etcd")
    shutil.copy(src / "build/pause/linux/pause.c", paths.SRC / "pause.c")
    dsc = next((work / "src").glob("*.dsc"))
    version = re.search(r"^Version: (.+)$", dsc.read_text(), re.M).group(1)
    info = [f"built {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by scripts/local-cluster.sh",
            f"source: Debian source package kubernetes {version}",
            *(f"deb: {d.name}" for d in sorted((work / 'debs').glob('*.deb'))),
            f"go: {run([gobin / 'go', 'version']).stdout.strip()}",
            f"make: {make_s:.0f} s, total {time.monotonic() - t0:.0f} s",
            f"{run([paths.BIN / 'kube-apiserver', '--version']).stdout.strip()}, "
            f"{run([paths.BIN / 'etcd', '--version']).stdout.splitlines()[0]}"]
    (paths.BIN / "BUILDINFO").write_text("\n".join(info) + "\n")
    subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
    shutil.rmtree(work)  # ~2 GB of sources and Go cache
    if not built():
        raise ClusterError(f"the built binaries in {paths.BIN} do not run")
    log(f"built in {time.monotonic() - t0:.0f} s (make {make_s:.0f} s): {paths.BIN}")
