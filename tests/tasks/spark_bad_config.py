"""A Spark config with a field Flyte's Spark does not have: construction must fail."""

import engine
from providers.spark import Spark

env = engine.TaskEnvironment(name="spark_bad", plugin_config=Spark(executor_instances=2))


@env.task
def job() -> int:
    return 1
