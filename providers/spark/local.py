"""Spark on the local backend: a real standalone master and workers from pyspark's distribution.

Each is ``spark-class org.apache.spark.deploy.{master.Master,worker.Worker}`` (the script
``exec``s the JVM, so the recorded pid is the JVM's), bound to 127.0.0.1 on ports the kernel
picks, tagged with the physical name and started in its own session. Readiness is read from
their logs: the master's URL from "Starting Spark master at", each worker's
"Successfully registered with master". Executors are the workers' children and inherit the
tag, so ``terminate(tag=...)`` reaches them too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import psutil

from engine.extend import ConfigError, ProviderRegistry, Read
from providers.local import ProcessRecord, find_tagged, log_tail, spawn, terminate, wait_until
from providers.local.provider import LocalProcesses

READY_TIMEOUT = 90.0
# The daemons only route messages: a small heap, and C1 alone (no C2 compiler threads) cuts
# their start from ~2.5 s to ~1.4 s on a 2-core machine. Executors keep the JVM's defaults.
DAEMON_MEMORY = "128m"
DAEMON_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

_MASTER_URL_RE = re.compile(r"Starting Spark master at (spark://\S+)")
_MASTER_UI_RE = re.compile(r"Bound MasterWebUI to \S+, and started at (http://\S+)")


def spark_home() -> Path:
    """pyspark's own distribution (its ``bin/spark-class`` and ``jars/``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def java_min() -> int:
    """Spark 4 runs on Java 17 or newer; Spark 3.5 still ran on 8 and 11."""
    import pyspark

    return 17 if int(pyspark.__version__.split(".")[0]) >= 4 else 8


def find_java() -> Path:
    """The java that ``spark-class`` will run (``$JAVA_HOME/bin/java``, else ``java`` on PATH),
    refused here if missing or older than this pyspark needs."""
    need = java_min()
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if not os.access(java, os.X_OK):
            raise ConfigError(f"JAVA_HOME={home} has no bin/java: point JAVA_HOME at a JDK {need} "
                              f"or unset it to use java from PATH", "JAVA_HOME")
    else:
        found = shutil.which("java")
        if not found:
            raise ConfigError(f"java not found (JAVA_HOME is unset and there is no java on PATH): "
                              f"install a JDK {need} or set JAVA_HOME", "JAVA_HOME")
        java = Path(found)
    version = _java_version(java)
    if version is not None and version < need:
        raise ConfigError(f"{java} is Java {version}; this Spark needs Java {need} or newer: "
                          f"install a JDK {need} or set JAVA_HOME to one", "JAVA_HOME")
    return java


def _java_version(java: Path) -> int | None:
    """The major version from the JDK's ``release`` file (no JVM started); None if unknown."""
    release = java.resolve().parent.parent / "release"
    try:
        m = re.search(r'^JAVA_VERSION="([0-9]+)(?:\.([0-9]+))?', release.read_text(), re.MULTILINE)
    except OSError:
        return None
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


# ---------------------------------------------------------------------- class-data archives
class ClassArchives:
    """Class-data-sharing archives of Spark's jars, one per kind of JVM (driver, master,
    worker), in a cache shared by every state file on the machine (~260 MB).

    Each JVM here loads 7,000 to 15,000 classes from the same jars; mapping them from an
    archive instead of reading and verifying them halves the driver's CPU time and takes
    about 40% off a cluster's start on a 2-core machine. The first JVM of a kind writes its
    archive as it exits (``-XX:ArchiveClassesAtExit``) under a temporary name, installed only
    once that JVM is seen to exit cleanly: a truncated archive crashes the JVMs that map it
    (SIGBUS). ``TASKRIG_SPARK_CDS=0`` turns this off. The archives are keyed by the java binary
    and the jars, so an upgrade of either starts a new set.
    """

    STALE_S = 3600.0

    def __init__(self, root: Path):
        self.root = root
        self.conf_dir = root / "conf"  # the same (empty) SPARK_CONF_DIR for every JVM: it is on the classpath

    def options(self, kind: str, writer: str) -> tuple[str, Path | None]:
        """JVM options for one JVM of ``kind``, and the temporary archive it will write at exit
        (None when it maps the installed one). ``writer`` makes the temporary name unique."""
        final = self.root / f"{kind}.jsa"
        if final.is_file():
            return f"-XX:SharedArchiveFile={final} -Xlog:cds*=off", None
        tmp = self.root / f"{kind}.{writer}.{os.getpid()}.tmp"
        return f"-XX:ArchiveClassesAtExit={tmp} -Xlog:cds*=off", tmp

    def executor_options(self, user_opts: str) -> str:
        """Executors run with the workers' classpath and load mostly the classes a worker
        loads, so the worker's archive serves them too (the JVM maps what matches)."""
        worker = self.root / "worker.jsa"
        if not worker.is_file() or "Share" in user_opts or "ArchiveClasses" in user_opts:
            return user_opts
        return f"-XX:SharedArchiveFile={worker} -Xlog:cds*=off {user_opts}".strip()

    def install(self, tmp: Path, clean_exit: bool) -> None:
        final = self.root / f"{tmp.name.split('.', 1)[0]}.jsa"
        try:
            if clean_exit and not final.exists() and tmp.is_file() and tmp.stat().st_size > 0:
                os.replace(tmp, final)
            else:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass

    def sweep(self) -> None:
        """Temporary archives whose writer died without anyone to install or drop them."""
        now = time.time()
        for tmp in self.root.glob("*.tmp"):
            try:
                if now - tmp.stat().st_mtime > self.STALE_S:
                    tmp.unlink()
            except OSError:
                pass


def class_archives() -> ClassArchives | None:
    """The archives for the java that ``spark-class`` will run, or None (turned off, no java,
    or no writable cache)."""
    if os.environ.get("TASKRIG_SPARK_CDS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        java = find_java().resolve()
    except ConfigError:
        return None
    if (_java_version(java) or 0) < 17:  # ArchiveClassesAtExit and -Xlog: JDK 13+, tried on 17
        return None
    cache = os.environ.get("TASKRIG_CACHE_DIR") or \
        str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskrig")
    return _class_archives(str(java), cache)


@functools.lru_cache(maxsize=8)
def _class_archives(java: str, cache: str) -> ClassArchives | None:
    try:
        h = hashlib.sha256(java.encode())
        release = Path(java).parent.parent / "release"
        h.update(release.read_bytes() if release.is_file() else b"")
        home = spark_home()
        h.update(str(home).encode())
        for jar in sorted((home / "jars").iterdir()):
            st = jar.stat()
            h.update(f"{jar.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        archives = ClassArchives(Path(cache) / "spark-cds" / h.hexdigest()[:16])
        archives.conf_dir.mkdir(parents=True, exist_ok=True)
        archives.sweep()
        return archives
    except OSError:
        return None


class LocalSparkCluster(LocalProcesses):
    """``local:spark:Cluster``: inputs ``{workers, cores, memory_mb}``; any change replaces it
    (a standalone worker cannot be resized, and ports are the kernel's, so nothing is lost)."""

    type_token = "local:spark:Cluster"
    replace_keys = ("*",)
    refresh_on_up = True
    delete_before_replace = True

    def check(self, inputs: dict) -> dict:
        find_java()
        home = spark_home()
        if not (home / "bin" / "spark-class").is_file() or not (home / "jars").is_dir():
            raise ConfigError(f"pyspark at {home} has no Spark distribution (bin/spark-class, jars/): "
                              f"reinstall pyspark from PyPI", "pyspark")
        return inputs

    # ------------------------------------------------------------------ processes
    def _env(self, rundir: Path, archives: ClassArchives | None) -> dict[str, str]:
        """Everything under the run's folder, so a crashed run's files go with its folder; an
        empty SPARK_CONF_DIR (the class archives' own when they are on: it is on the classpath
        they were made with) keeps a user's spark-defaults/spark-env out of the engine's clusters."""
        conf = archives.conf_dir if archives else rundir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        return {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_CONF_DIR": str(conf),
            "SPARK_LOG_DIR": str(rundir / "logs"),
            "SPARK_WORKER_DIR": str(rundir / "work"),
            "SPARK_LOCAL_DIRS": str(rundir / "local"),
            "SPARK_PID_DIR": str(rundir),
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "SPARK_DAEMON_JAVA_OPTS": DAEMON_JAVA_OPTS,
            # The REST submission server would bind the fixed port 6066 and collide between clusters.
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        }

    @staticmethod
    def _daemon_env(env: dict, archives: ClassArchives | None, kind: str, writer: str,
                    pending: dict[str, str], role: str) -> dict:
        if archives is None:
            return env
        opts, tmp = archives.options(kind, writer)
        if tmp is not None:
            pending[role] = str(tmp)
        return {**env, "SPARK_DAEMON_JAVA_OPTS": f"{DAEMON_JAVA_OPTS} {opts}"}

    def _start_master(self, name: str, rundir: Path, env: dict) -> tuple[ProcessRecord, str, str | None]:
        log = rundir / "logs" / "master.log"
        log.unlink(missing_ok=True)  # readiness is read from it: no lines from an earlier start
        rec = spawn([str(spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                     "--host", "127.0.0.1", "--port", "0", "--webui-port", "0"], name, log, env=env, cwd=rundir)
        found: dict[str, str] = {}

        def ready() -> bool:
            text = _read(log)
            m = _MASTER_URL_RE.search(text)
            if m:
                found["url"] = m.group(1)
                ui = _MASTER_UI_RE.search(text)
                found["ui"] = ui.group(1) if ui else None
            # A worker that registers before "ALIVE" is told to retry in 5-15 s: wait for it.
            return bool(m) and "New state: ALIVE" in text

        wait_until(ready, READY_TIMEOUT, f"spark master of {name}",
                   failed=lambda: None if rec.alive() else f"the master exited:\n{log_tail(log)}")
        return rec, found["url"], found.get("ui")

    def _start_worker(self, name: str, rundir: Path, env: dict, url: str, wname: str, inputs: dict) -> ProcessRecord:
        cmd = [str(spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker",
               "--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
               "--cores", str(inputs["cores"]), "--memory", f"{inputs['memory_mb']}m",
               "--work-dir", str(rundir / "work" / wname), url]
        log = rundir / "logs" / f"{wname}.log"
        log.unlink(missing_ok=True)
        return spawn(cmd, name, log, env=env, cwd=rundir)

    def _wait_workers(self, name: str, rundir: Path, workers: dict[str, ProcessRecord]) -> None:
        logs = {w: rundir / "logs" / f"{w}.log" for w in workers}

        def failed():
            dead = [w for w, r in workers.items() if not r.alive()]
            return f"worker {dead[0]} exited:\n{log_tail(logs[dead[0]])}" if dead else None

        wait_until(lambda: all("Successfully registered with master" in _read(p) for p in logs.values()),
                   READY_TIMEOUT, f"{len(workers)} spark worker(s) of {name}", failed=failed)

    # ------------------------------------------------------------------ contract
    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        name = idempotency_key
        rundir = self._dir(name)
        rundir.mkdir(parents=True, exist_ok=True)
        archives = class_archives()
        pending: dict[str, str] = {}  # role -> the temporary class archive its JVM writes at exit
        try:
            env = self._env(rundir, archives)
            master, url, ui = self._start_master(
                name, rundir, self._daemon_env(env, archives, "master", name, pending, "master"))
            workers = {}
            for i in range(inputs["workers"]):
                w = f"w{i}"
                wenv = self._daemon_env(env, archives, "worker", f"{name}-{w}", pending, w)
                workers[w] = self._start_worker(name, rundir, wenv, url, w, inputs)
            self._wait_workers(name, rundir, workers)
        except BaseException:
            terminate(tag=name)  # create is transactional: nothing of it survives a failure
            for tmp in pending.values():
                archives.install(Path(tmp), clean_exit=False)
            shutil.rmtree(rundir, ignore_errors=True)
            raise
        return name, {"master_url": url, "web_ui": ui, "master": master.to_dict(),
                      "workers": {w: r.to_dict() for w, r in sorted(workers.items())},
                      "log_dir": str(rundir / "logs"), "local_dir": str(rundir / "local"),
                      "class_archives": pending}

    def read(self, id: str, inputs: dict, outputs: dict | None):
        if outputs is None or "master" not in outputs:  # recovery: only the name is known
            procs = find_tagged(id)
            if outputs is None:
                return {"pids": [p.pid for p in procs]} if procs else None
            # Adopted from a crashed create: its addresses are unknown, so it is replaced.
            return Read(inputs={**inputs, "master": "unknown"}, outputs=outputs) if procs else None
        master_up = ProcessRecord.from_dict(outputs["master"]).alive()
        alive = {w: r for w, r in outputs["workers"].items() if ProcessRecord.from_dict(r).alive()}
        if master_up and len(alive) == len(outputs["workers"]):
            return outputs
        if not master_up and not alive and not find_tagged(id):
            return None
        # Part of it died: the actual inputs differ, so the next plan replaces what is left.
        actual = {**inputs, "workers": len(alive)}
        if not master_up:
            actual["master"] = "down"
        return Read(inputs=actual, outputs={**outputs, "workers": alive})

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        roles: dict[str, ProcessRecord] = {}
        if outputs and "master" in outputs:
            roles = {w: ProcessRecord.from_dict(r) for w, r in outputs.get("workers", {}).items()}
            roles["master"] = ProcessRecord.from_dict(outputs["master"])
        pending = {role: Path(p) for role, p in ((outputs or {}).get("class_archives") or {}).items()}
        # A JVM writing its class archive at exit needs longer than the usual grace.
        clean = _stop(roles, grace=60.0 if pending else 10.0)
        terminate(tag=id, records=list(roles.values()))
        archives = class_archives() if pending else None
        for role, tmp in pending.items():
            if archives is not None and tmp.parent == archives.root:
                archives.install(tmp, clean_exit=role in clean)
            else:
                tmp.unlink(missing_ok=True)
        shutil.rmtree(self._dir(id), ignore_errors=True)


def _stop(roles: dict[str, ProcessRecord], grace: float) -> set[str]:
    """SIGTERM each JVM's process group and wait; the roles whose JVM exited by itself (0, or
    143 after SIGTERM). Only the engine that started a JVM learns its exit code, so a cluster
    recovered by another process reports none (and its archives are dropped)."""
    procs: dict[str, psutil.Process] = {}
    for role, rec in roles.items():
        if not rec.alive():
            continue
        try:
            p = psutil.Process(rec.pid)
            os.killpg(rec.pid, signal.SIGTERM)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        procs[role] = p
    if not procs:
        return set()
    gone, _ = psutil.wait_procs(list(procs.values()), timeout=grace)
    return {role for role, p in procs.items() if p in gone and p.returncode in (0, 143)}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


ProviderRegistry.register(LocalSparkCluster)
