"""Spark tasks the tests run through the real CLI."""

import json
import os
import time
from pathlib import Path

import engine
from providers.spark import Spark

env = engine.TaskEnvironment(
    name="spark_t",
    plugin_config=Spark(spark_conf={"spark.taskrig.probe": "from-config"},
                        hadoop_conf={"fs.taskrig.probe": "hadoop-value"}),
)


def bucket(x: int) -> int:
    """Run by the executors' Python workers: proves they import the task's module."""
    return x % 3


@env.task
def job(n: int = 1000) -> dict:
    spark = engine.ctx().data["spark_session"]
    df = spark.range(n).selectExpr("id % 10 AS k").groupBy("k").count()
    rows = sorted((r["k"], r["count"]) for r in df.collect())
    buckets = sorted(spark.sparkContext.parallelize(range(30), 2).map(bucket).countByValue().items())
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
    jvm_args = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    return {
        "driver_cds": [a for a in jvm_args if "Archive" in a],
        "executor_opts": spark.conf.get("spark.executor.extraJavaOptions", ""),
        "master": spark.sparkContext.master,
        "master_url": engine.ctx().data["spark_master_url"],
        "probe": spark.conf.get("spark.taskrig.probe"),
        "hadoop_probe": spark.sparkContext._jsc.hadoopConfiguration().get("fs.taskrig.probe"),
        "rows": rows,
        "buckets": buckets,
        "executors": executors,
    }


@env.task
def slow(marker: str, seconds: float = 120.0) -> str:
    """Signals that the body started (a marker file naming the run), then sleeps: the crash test
    kills the engine here."""
    tc = engine.ctx()
    spark = tc.data["spark_session"]
    assert spark.range(10).count() == 10  # executors are up before the kill
    Path(marker).write_text(json.dumps({"run_id": tc.run_id, "master": spark.sparkContext.master,
                                        "pid": os.getpid()}))
    time.sleep(seconds)
    return "done"
