"""scripts/localcluster/images.py: docker-archives written without a container engine.

The archives must be what `ctr images import` takes (manifest, config and diff_ids agree), the
task image must be complete (its interpreter runs dask in a chroot with nothing of the host),
and the pause image must be a static binary that pauses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from localcluster import images, paths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DISTS = ["dask", "distributed", "cloudpickle", "taskrig"]
PAUSE_MIMIC = "#include <unistd.h>\nint main(void) { for (;;) pause(); return 0; }\n"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """paths.IMAGES and paths.SRC in a temporary folder; SRC gets the build's pause.c if there
    is one (else a stand-in that pauses just the same)."""
    base = tmp_path_factory.mktemp("k8s-images")
    src = base / "src"
    src.mkdir()
    found = [paths.SRC / "pause.c", *sorted(paths.CACHE.glob("build/src/*/build/pause/linux/pause.c"))]
    real = next((p for p in found if p.is_file()), None)
    if real:
        shutil.copy(real, src / "pause.c")
    else:
        (src / "pause.c").write_text(PAUSE_MIMIC)
    mp = pytest.MonkeyPatch()
    mp.setattr(paths, "IMAGES", base / "images")
    mp.setattr(paths, "SRC", src)
    yield base
    mp.undo()


@pytest.fixture(scope="module")
def task(cache):
    t0 = time.monotonic()
    tag, archive = images.task_image(DISTS)
    return tag, archive, time.monotonic() - t0


# ---------------------------------------------------------------------------------- helpers
def read_archive(archive: Path) -> tuple[list, dict, dict[str, str], bytes, dict]:
    """(manifest.json, the config, {layer path: sha256 of its bytes}, raw config, repositories)."""
    with tarfile.open(archive) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        raw = tf.extractfile(manifest[0]["Config"]).read()
        shas = {}
        for layer in manifest[0]["Layers"]:
            h, f = hashlib.sha256(), tf.extractfile(layer)
            while chunk := f.read(1 << 20):
                h.update(chunk)
            shas[layer] = h.hexdigest()
        repositories = json.load(tf.extractfile("repositories"))
    return manifest, json.loads(raw), shas, raw, repositories


def check_archive(archive: Path, tag: str) -> tuple[list, dict]:
    manifest, config, shas, raw, repositories = read_archive(archive)
    assert len(manifest) == 1 and manifest[0]["RepoTags"] == [tag]
    assert manifest[0]["Config"] == hashlib.sha256(raw).hexdigest() + ".json"
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"]["type"] == "layers"
    assert config["rootfs"]["diff_ids"] == [f"sha256:{shas[layer]}" for layer in manifest[0]["Layers"]]
    assert len(config["history"]) == len(manifest[0]["Layers"])
    repo, version = tag.rsplit(":", 1)
    assert repositories == {repo: {version: shas[manifest[0]["Layers"][-1]]}}
    return manifest, config


def layer_members(archive: Path, index: int = 0) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tf:
        layer = json.load(tf.extractfile("manifest.json"))[0]["Layers"][index]
        with tarfile.open(fileobj=io.BytesIO(tf.extractfile(layer).read())) as inner:
            return inner.getmembers()


def extract(archive: Path, dest: Path) -> Path:
    """Unpack the layers in order with GNU tar, numeric owners, as a snapshotter would."""
    dest.mkdir()
    with tarfile.open(archive) as tf:
        for layer in json.load(tf.extractfile("manifest.json"))[0]["Layers"]:
            subprocess.run(["tar", "-C", dest, "--numeric-owner", "-xpf", "-"], input=tf.extractfile(layer).read(),
                           check=True)
    return dest


def chroot_run(root: Path, env: list[str], *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the image's root with only the image's Env, PID 1 of a fresh /proc."""
    (root / "proc").mkdir(exist_ok=True)
    return subprocess.run(["/usr/bin/env", "-i", *env, "/usr/bin/unshare", "-m", "-p", "-f",
                           f"--mount-proc={root / 'proc'}", "/usr/sbin/chroot", root, *cmd],
                          capture_output=True, text=True, timeout=timeout)


def elf_program_headers(data: bytes) -> list[int]:
    """The p_type of every program header of an ELF64 little-endian file."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not an ELF64 LE file"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]


# ------------------------------------------------------------------------------------ archive
def test_archive_is_consistent_and_deterministic(tmp_path):
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    (layer / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (layer / "bin" / "tool").chmod(0o750)
    (layer / "etc").mkdir()
    (layer / "etc" / "conf").write_text("a=1\n")
    os.link(layer / "etc" / "conf", layer / "etc" / "conf.hard")
    (layer / "etc" / "conf.link").symlink_to("conf")
    os.mkfifo(layer / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(layer / "sock"))
    os.utime(layer / "etc" / "conf", (1e9, 1e9))
    second = tmp_path / "second.tar"
    with tarfile.open(second, "w") as tf:
        tf.addfile(tarfile.TarInfo("extra"), io.BytesIO(b""))
    cfg = {"Env": ["A=1"], "Entrypoint": ["/bin/tool"], "Cmd": ["x"], "User": "1:2", "WorkingDir": "/etc"}
    try:
        a = images.write_docker_archive(tmp_path / "a.tar", "localhost/t:1", [layer, second], cfg)
        b = images.write_docker_archive(tmp_path / "b.tar", "localhost/t:1", [layer, second], cfg)
    finally:
        sock.close()
    assert a.read_bytes() == b.read_bytes(), "same inputs must give the same archive"
    _, config = check_archive(a, "localhost/t:1")
    assert config["config"] == cfg
    members = {m.name: m for m in layer_members(a)}
    assert list(members) == sorted(members)
    assert set(members) == {"bin", "bin/tool", "etc", "etc/conf", "etc/conf.hard", "etc/conf.link"}
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
    assert members["bin/tool"].mode == 0o750 and members["bin/tool"].isfile()
    assert members["etc/conf.link"].issym() and members["etc/conf.link"].linkname == "conf"
    assert members["etc/conf.hard"].isfile() and members["etc/conf.hard"].size == 4
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    with pytest.raises(ValueError):
        images.write_docker_archive(tmp_path / "c.tar", "localhost/t:1", [layer], {"Entrypont": ["x"]})


def test_closure_follows_requires_but_not_extras():
    closure = images.distribution_closure(["distributed"])
    assert {"dask", "tornado", "msgpack", "cloudpickle", "toolz"} <= set(closure)
    assert "numpy" not in images.distribution_closure(["dask"])  # only dask[array] wants it


# --------------------------------------------------------------------------------- task image
def test_task_image_archive(task):
    tag, archive, seconds = task
    assert tag.startswith("localhost/taskrig-task:") and len(tag.rsplit(":", 1)[1]) == 12
    assert archive.parent == paths.IMAGES
    _, config = check_archive(archive, tag)
    assert config["config"]["Cmd"] == ["python3"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["config"]["Env"]
    names = [m.name for m in layer_members(archive)]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "/__editable__" in n], "the editable finder points at the host"
    assert not [n for n in names if n.rsplit("/python3.11/", 1)[-1].startswith(("test/", "idlelib/"))]
    size = archive.stat().st_size / 1e6
    print(f"task image {tag}: {size:.0f} MB in {seconds:.1f} s")
    assert size < 250 and seconds < 60


def test_task_image_is_cached(task):
    tag, archive, _ = task
    before = archive.stat().st_mtime_ns
    again_tag, again = images.task_image(DISTS)
    assert (again_tag, again) == (tag, archive)
    assert archive.stat().st_mtime_ns == before, "rebuilt although nothing changed"
    other_tag, _ = images.task_image(["cloudpickle"])
    assert other_tag != tag


@needs_root
def test_task_image_runs_dask_in_a_chroot(task, tmp_path):
    """Nothing of the host is visible in the chroot: this fails if a shared library, a stdlib
    module or a dependency is missing from the image."""
    import distributed

    tag, archive, _ = task
    root = extract(archive, tmp_path / "root")
    env = read_archive(archive)[1]["config"]["Env"]
    code = ("import dask, distributed, cloudpickle, engine, providers, ssl, sqlite3, json, http.client, "
            "asyncio, multiprocessing, importlib.metadata as m, sys; "
            "print(distributed.__version__, m.version('distributed'), sys.executable)")
    r = chroot_run(root, env, "/usr/bin/python3", "-c", code)
    assert r.returncode == 0, r.stderr
    version, meta_version, exe = r.stdout.split()
    assert version == meta_version == distributed.__version__
    r = chroot_run(root, env, "dask", "--version")
    assert r.returncode == 0 and distributed.__version__ in r.stdout, r.stderr
    r = chroot_run(root, env, "python", "-c", "import ssl; ssl.create_default_context(); print('ok')")
    assert r.stdout.strip() == "ok", r.stderr


@needs_root
def test_bytecode_is_taken_by_the_image_interpreter(cache, tmp_path):
    """With bytecode=True the host's .pyc files go in with mtime 0 in their header, matching
    the layer's sources, so `python -v` reports them as matching instead of recompiling."""
    tag, archive = images.task_image(["cloudpickle"], bytecode=True)
    assert tag != images.task_image(["cloudpickle"])[0]
    root = extract(archive, tmp_path / "root")
    env = read_archive(archive)[1]["config"]["Env"]
    r = chroot_run(root, env, "python3", "-v", "-c", "import json, cloudpickle")
    assert r.returncode == 0, r.stderr
    matched = [ln for ln in r.stderr.splitlines() if ln.startswith("# ") and " matches " in ln]
    assert any("/json/__pycache__/__init__." in ln for ln in matched), r.stderr[-3000:]
    assert any("/cloudpickle/__pycache__/" in ln for ln in matched), r.stderr[-3000:]


def test_ctr_commands(tmp_path):
    """import_image and image_present speak to the given socket in the k8s.io namespace."""
    calls = tmp_path / "calls"
    ctr = tmp_path / "ctr"
    ctr.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho localhost/pause:3.4.1\n')
    ctr.chmod(0o755)
    sock = tmp_path / "containerd.sock"
    images.import_image(tmp_path / "a.tar", sock, ctr=str(ctr))
    assert images.image_present("localhost/pause:3.4.1", sock, ctr=str(ctr))
    assert not images.image_present("localhost/pause:3.4", sock, ctr=str(ctr))
    assert calls.read_text().splitlines()[:2] == [f"--address {sock} -n k8s.io images import {tmp_path / 'a.tar'}",
                                                  f"--address {sock} -n k8s.io images ls -q"]


# -------------------------------------------------------------------------------- pause image
@needs_root
def test_pause_image_is_static_and_pauses(cache, tmp_path):
    archive = images.pause_image()
    assert archive.parent == paths.IMAGES and archive.name.startswith("pause-")
    mtime = archive.stat().st_mtime_ns
    assert images.pause_image() == archive and archive.stat().st_mtime_ns == mtime
    _, config = check_archive(archive, paths.PAUSE_IMAGE)
    assert config["config"] == {"User": "65535:65535", "Entrypoint": ["/pause"]}
    [member] = layer_members(archive)
    assert member.name == "pause" and member.mode == 0o755
    root = extract(archive, tmp_path / "root")
    kinds = elf_program_headers((root / "pause").read_bytes())
    assert 3 not in kinds and 2 not in kinds, "has PT_INTERP/PT_DYNAMIC: not static"
    p = subprocess.Popen(["/usr/sbin/chroot", "--userspec=65535:65535", root, "/pause"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert p.poll() is None, f"pause exited: {p.communicate()}"
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
    if "sigdown" in (paths.SRC / "pause.c").read_text():  # Kubernetes' own: exits 0 on SIGTERM
        assert p.returncode == 0
        r = subprocess.run(["/usr/sbin/chroot", root, "/pause", "-v"], capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == "pause.c v3.4.1-taskrig"
