"""The Spark plugin: declares a standalone cluster from a ``Spark`` config and hands the task a
SparkSession connected to it (``engine.ctx().data["spark_session"]``).

The task body runs in the engine's process, so the driver is that process's py4j gateway
JVM. Starting it costs as much as a master, so ``running`` starts it in a thread while the
master and workers come up, and the session is built on it once the master's URL is known.
The gateway is tagged like the run's other processes and is shut down (not left to die with
the engine) before the cluster is torn down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import engine
from engine.extend import Attachment, ConfigError, DeclareContext, TaskPlugin, TaskPluginRegistry
from providers.local import TAG_VAR, ProcessRecord, find_tagged, terminate

from .config import Spark, executor_sizing
from .local import ClassArchives, class_archives

TYPE_TOKEN = "local:spark:Cluster"
DRIVER_TIMEOUT = 120.0

# Keys spark-submit reads when it starts the driver JVM; the rest of the configuration reaches
# the JVM through py4j when the context is made, and so stays off its command line (a
# hadoop_conf credential would otherwise show in `ps`).
_LAUNCH_PREFIXES = ("spark.driver.", "spark.jars", "spark.submit.", "spark.files", "spark.archives")

# pyspark hands the gateway's Popen a copy of os.environ (no env argument), so the tag goes
# there for the launch. Processes the engine starts meanwhile are local-backend processes,
# and spawn() sets their own tag over it.
_ENV_LOCK = threading.Lock()


def driver_conf(config: Spark, app_name: str) -> dict[str, str]:
    """The session's configuration without the two things only provisioning knows (the master
    URL and the run's scratch folder). The sizing keys are written back normalised, because
    the workers were sized for exactly these executors: Spark's own defaults (1g executors)
    would not fit in them and no executor would ever start."""
    sizing = executor_sizing(config)
    conf = {
        "spark.app.name": app_name,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.pyspark.python": config.executor_path or sys.executable,
        "spark.cores.max": str(sizing.instances * sizing.cores),
    }
    conf.update(config.spark_conf or {})
    conf.update({f"spark.hadoop.{k}": v for k, v in (config.hadoop_conf or {}).items()})
    conf.update({
        "spark.executor.instances": str(sizing.instances),
        "spark.executor.cores": str(sizing.cores),
        "spark.executor.memory": f"{sizing.memory_mb}m",
        "spark.driver.memory": f"{sizing.driver_memory_mb}m",
    })
    conf.pop("spark.master", None)  # the engine's cluster is the master; see attach
    return conf


class _Driver:
    """The gateway JVM of one run, launched in a thread; ``wait`` re-raises its failure."""

    def __init__(self, conf: dict[str, str], tag: str, archives: ClassArchives | None):
        self.tag = tag
        self.error: BaseException | None = None
        self.gateway = None
        self.archive_tmp = None
        self.archives = archives
        env = {TAG_VAR: tag, "SPARK_LOCAL_IP": "127.0.0.1"}
        launch = {k: v for k, v in conf.items() if k.startswith(_LAUNCH_PREFIXES)}
        user_opts = launch.get("spark.driver.extraJavaOptions", "")
        # The archive is only valid for the classpath it was made with, which starts with
        # SPARK_CONF_DIR: a user's own conf dir (or JVM sharing options) means no archive.
        if archives is not None and "SPARK_CONF_DIR" not in os.environ and "Share" not in user_opts \
                and "ArchiveClasses" not in user_opts:
            opts, self.archive_tmp = archives.options("driver", tag)
            launch["spark.driver.extraJavaOptions"] = f"{opts} {user_opts}".strip()
            env["SPARK_CONF_DIR"] = str(archives.conf_dir)
        self._thread = threading.Thread(target=self._launch, args=(launch, env), name="spark-driver", daemon=True)
        self._thread.start()

    def _launch(self, launch: dict[str, str], env: dict[str, str]) -> None:
        try:
            from pyspark import SparkConf, SparkContext
            from pyspark.java_gateway import launch_gateway

            # The JVM's stdout would land in `engine up --json`'s document: send it to stderr.
            kwargs: dict[str, Any] = {"stdout": _stderr_fd()}
            # SPARK_LOCAL_IP: without it the JVM resolves the host name and may pick another
            # interface than the one the cluster listens on.
            with _ENV_LOCK, _environ(env):
                self.gateway = launch_gateway(SparkConf(loadDefaults=False).setAll(list(launch.items())),
                                              popen_kwargs=kwargs)
            SparkContext._ensure_initialized(gateway=self.gateway)
        except BaseException as e:  # noqa: BLE001 - re-raised in the task's thread by wait()
            self.error = e

    def wait(self, timeout: float = DRIVER_TIMEOUT) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the Spark driver JVM did not start within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"the Spark driver JVM did not start: {self.error}") from self.error

    def shutdown(self, timeout: float = 15.0) -> None:
        """Close py4j, then the JVM's stdin: PythonGatewayServer exits on EOF."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Still starting (pyspark waits for it without a deadline): stop the JVM, our child,
            # and the launch fails at once.
            mine = [p for p in find_tagged(self.tag) if p.ppid() == os.getpid()]
            terminate(records=[ProcessRecord(p.pid, p.create_time()) for p in mine])
            self._thread.join(10)
        gw = self.gateway
        proc = getattr(gw, "proc", None) if gw is not None else None
        clean = False
        try:
            if gw is None:
                return
            from pyspark import SparkContext

            with SparkContext._lock:
                if SparkContext._gateway is gw:
                    SparkContext._gateway = None
                    SparkContext._jvm = None
            with contextlib.suppress(Exception):
                gw.shutdown()
            if proc is None:
                return
            with contextlib.suppress(Exception):
                proc.stdin.close()
            try:
                # Writing its class archive at exit (first run only) takes the JVM longer.
                proc.wait(timeout=60.0 if self.archive_tmp else timeout)
                clean = proc.returncode == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        finally:
            if self.archive_tmp is not None:
                self.archives.install(self.archive_tmp, clean_exit=clean)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stderr_fd() -> int | None:
    try:
        return sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class SparkPlugin(TaskPlugin):
    def __init__(self):
        self._drivers: dict[str, _Driver] = {}

    def declare(self, config: Spark, ctx: DeclareContext):
        if ctx.backend == "kubernetes":  # a Spark Operator SparkApplication (providers/kubernetes)
            from providers.kubernetes.plugins import declare_spark

            return declare_spark(config, ctx)
        s = executor_sizing(config)
        inputs = {"workers": s.instances, "cores": s.cores, "memory_mb": s.memory_mb}
        # spark_conf and hadoop_conf stay out of the inputs: they often carry credentials
        # (fs.s3a.secret.key), and the state file must never hold one.
        return [ctx.declaration(TYPE_TOKEN, "cluster", inputs)]

    @contextlib.contextmanager
    def running(self, config: Spark, ctx: DeclareContext):
        if ctx.backend == "kubernetes":  # the driver runs in the operator's pod, not here
            yield
            return
        from pyspark import SparkContext

        if SparkContext._gateway is not None or self._drivers:
            raise ConfigError("a Spark driver JVM is already running in this process, and Spark allows one "
                              "per process: stop it, or run this task with its own `engine up`", "plugin_config")
        cluster = ctx.declaration(TYPE_TOKEN, "cluster", {})
        # An ephemeral cluster's name is this run's, so the driver shares its tag and recovery
        # finds every process of the run by one name. A reusable cluster outlives runs and may
        # be replaced during this one's apply (deleted by its tag): the driver gets its own.
        tag = cluster.physical_name if cluster.ephemeral else f"{ctx.stack}-{ctx.run_id}-driver"
        driver = self._drivers[ctx.run_id] = _Driver(driver_conf(config, ctx.task_name or ctx.stack), tag,
                                                     class_archives())
        try:
            yield
        finally:
            self._drivers.pop(ctx.run_id, None)
            driver.shutdown()

    def attach(self, config: Spark, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
        if ctx.backend == "kubernetes":
            from providers.kubernetes.plugins import attach_spark

            return attach_spark(config, outputs, ctx)
        cluster = outputs["cluster"]
        conf = {**driver_conf(config, ctx.task_name or ctx.stack),
                "spark.master": cluster["master_url"], "spark.local.dir": cluster["local_dir"]}
        archives = class_archives()
        if archives is not None:
            opts = archives.executor_options(conf.get("spark.executor.extraJavaOptions", ""))
            if opts:
                conf["spark.executor.extraJavaOptions"] = opts
        driver = self._drivers[ctx.run_id]
        # pyspark reads the executors' Python from PYSPARK_PYTHON when the context is made (the
        # spark.pyspark.python key only reaches apps that spark-submit launches); the default,
        # "python3" from PATH, may be another interpreter than the one the task's modules are in.
        return Attachment(env_vars={"PYSPARK_PYTHON": conf["spark.pyspark.python"]},
                          data={"spark_master_url": cluster["master_url"]},
                          contexts=[lambda: _session(driver, conf)])


@contextlib.contextmanager
def _session(driver: _Driver, conf: dict[str, str]):
    """The task's SparkSession, in ``engine.ctx().data``, stopped when the body ends."""
    from pyspark.sql import SparkSession

    driver.wait()
    # SparkContext takes over SIGINT (cancel jobs, raise KeyboardInterrupt) and never gives it
    # back; after the session the engine's own Ctrl-C handling must hold again.
    in_main = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if in_main else None
    builder = SparkSession.builder
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    engine.ctx().data["spark_session"] = spark
    try:
        yield spark
    except BaseException as e:
        _render_now(e)
        raise
    finally:
        with contextlib.suppress(Exception):  # the body may have stopped it itself
            spark.stop()
        if in_main and sigint is not None:
            signal.signal(signal.SIGINT, sigint)


_frozen_types: dict[type, type] = {}


def _render_now(error: BaseException) -> None:
    """pyspark's errors ask the driver JVM for their own text (``str(e)`` is a py4j call), and
    the engine words a failed run after the driver has stopped. Fix each JVM-backed error's
    text now, keeping its type (``except AnalysisException`` still matches)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (CapturedException, Py4JJavaError)) and type(e) not in _frozen_types.values():
            try:
                text = str(e)
            except Exception:  # noqa: BLE001 - the JVM is already gone: keep what Python holds
                text = getattr(e, "_desc", None) or repr(e.args)
            cls = type(e)
            frozen = _frozen_types.get(cls)
            if frozen is None:
                frozen = _frozen_types[cls] = type(cls.__name__, (cls,), {
                    "__str__": lambda self: self._taskrig_text, "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__})
            e.__class__ = frozen
            e._taskrig_text = text
        e = e.__cause__ or e.__context__


TaskPluginRegistry.register(Spark, SparkPlugin())
