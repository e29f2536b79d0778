"""The Spark plugin on the local backend, through the real `engine` CLI: a standalone master and
worker from pyspark's distribution, a SparkSession in the task, nothing left afterwards, and
crash recovery that finds every process by its tag."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from conftest import TASKS, wait_for
from providers.local.process import find_tagged
from providers.spark import PodTemplate, Spark
from providers.spark.config import executor_sizing

SPARK_TASKS = str(TASKS / "spark_tasks.py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_config_sizes_the_workers_and_rejects_bad_values():
    """spark_conf wins over the executor pod's resources, which win over the small defaults;
    a bad value fails at construction, naming the field."""
    import pydantic

    default = executor_sizing(Spark())
    assert (default.instances, default.cores, default.memory_mb, default.driver_memory_mb) == (1, 1, 512, 512)
    pod = PodTemplate(pod_spec={"containers": [{"name": "primary",
                                                "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}]})
    assert executor_sizing(Spark(executor_pod=pod)).cores == 2
    assert executor_sizing(Spark(executor_pod=pod)).memory_mb == 1024
    sized = executor_sizing(Spark(executor_pod=pod, spark_conf={"spark.executor.memory": "600m",
                                                                "spark.executor.instances": "2"}))
    assert (sized.instances, sized.cores, sized.memory_mb) == (2, 2, 600)
    for bad, field in [({"spark_conf": {"spark.executor.memory": "lots"}}, "spark_conf"),
                       ({"spark_conf": {"spark.executor.cores": "0"}}, "spark_conf"),
                       ({"executor_pod": {"pod_spec": {"containers": [{"resources": {"limits": {"cpu": "x"}}}]}}},
                        "executor_pod"),
                       ({"workers": 2}, "workers")]:
        with pytest.raises(pydantic.ValidationError) as e:
            Spark(**bad)
        assert e.value.errors()[0]["loc"][0] == field


@pytest.mark.slow
def test_dataframe_job_runs_on_the_standalone_master_and_nothing_is_left(engine, tmp_path):
    """Twice, with a cache of its own: the first run writes the JVMs' class archives as they
    exit, the second maps them (driver and executors included)."""
    cache = tmp_path / "cache"
    try:
        _job_twice(engine, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # ~260 MB of archives; pytest keeps old tmp dirs


def _job_twice(engine, cache: Path) -> None:
    for first in (True, False):
        r = engine("up", f"{SPARK_TASKS}:job", "--json", env={"TASKRIG_CACHE_DIR": str(cache)})
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        out = doc["outputs"]
        assert out["master"].startswith("spark://127.0.0.1:") and out["master"] == out["master_url"]
        assert out["probe"] == "from-config"  # spark_conf reaches the session
        assert out["hadoop_probe"] == "hadoop-value"  # hadoop_conf reaches its Hadoop configuration
        assert out["rows"] == [[k, 100] for k in range(10)]
        assert out["buckets"] == [[0, 10], [1, 10], [2, 10]]  # Python ran on the executors
        assert out["executors"] == 1

        name = f"spark_t-{doc['run_id']}-cluster"
        assert find_tagged(name) == []  # master, worker, executor and driver JVM all gone
        assert not (engine.cwd / ".engine" / "runtime" / name).exists()
        assert engine.resources() == []

        (archives,) = (cache / "spark-cds").iterdir()
        assert sorted(p.name for p in archives.glob("*.jsa")) == ["driver.jsa", "master.jsa", "worker.jsa"]
        assert not list(archives.glob("*.tmp"))
        if first:
            assert [a.split("=")[0] for a in out["driver_cds"]] == ["-XX:ArchiveClassesAtExit"]
            assert "SharedArchiveFile" not in out["executor_opts"]
        else:
            assert out["driver_cds"] == [f"-XX:SharedArchiveFile={archives / 'driver.jsa'}"]
            assert f"-XX:SharedArchiveFile={archives / 'worker.jsa'}" in out["executor_opts"]
    assert [x["status"] for x in engine.runs()] == ["succeeded", "succeeded"]


@pytest.mark.slow
def test_kill_9_during_the_task_is_recovered_by_the_next_command(engine, tmp_path):
    marker = tmp_path / "started.json"
    p = engine.spawn("up", f"{SPARK_TASKS}:slow", "-i", f"marker={marker}")
    wait_for(lambda: marker.exists() and marker.stat().st_size > 0 or p.poll() is not None, timeout=240,
             what="the task to start")
    assert p.poll() is None, p.communicate()
    info = json.loads(marker.read_text())
    name = f"spark_t-{info['run_id']}-cluster"
    before = find_tagged(name)
    assert len(before) >= 4, [q.cmdline()[-3:] for q in before]  # master, worker, executor, driver

    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    # The driver JVM died with the engine's group; the cluster, in its own sessions, did not.
    assert find_tagged(name)

    r = engine("destroy", "spark_t")
    assert r.returncode == 0, r.stderr
    assert find_tagged(name) == []
    assert engine.resources() == []
    runs = engine.runs()
    assert [x["status"] for x in runs if x["task"] == "spark_t.slow"] == ["crashed"]


def test_unknown_config_field_exits_2_and_leaves_the_state_alone(engine):
    assert engine("destroy", "spark_t").returncode == 0  # creates an (empty) state file
    before = _digest(engine.state)
    r = engine("up", f"{TASKS / 'spark_bad_config.py'}:job")
    assert r.returncode == 2, r.stderr
    assert "executor_instances" in r.stderr
    assert _digest(engine.state) == before
    assert find_tagged("spark_bad-", prefix=True) == []
    assert not (engine.cwd / ".engine" / "runtime").exists()


def test_no_java_exits_2_before_anything_starts(engine):
    r = engine("up", f"{SPARK_TASKS}:job", env={"PATH": os.path.dirname(sys.executable), "JAVA_HOME": ""})
    assert r.returncode == 2, r.stderr
    assert "java not found" in r.stderr and "JAVA_HOME" in r.stderr
    assert not engine.state.exists()  # checked before the state is opened
    assert find_tagged("spark_t-", prefix=True) == []
