"""The task bench_ray.py runs with ``engine up``: one remote call on a Ray cluster of a head
and one worker node.

    engine up bench/tasks_ray.py:one_call --state /tmp/x/state.db
"""

import ray

import engine
from providers.ray import RayJobConfig, WorkerNodeConfig

env = engine.TaskEnvironment(name="bench_ray", plugin_config=RayJobConfig(
    worker_node_config=[WorkerNodeConfig(group_name="w", replicas=1)]))


@ray.remote
def square(x: int) -> int:
    return x * x


@env.task
def one_call(x: int = 7) -> int:
    ray.init()  # the provisioned cluster (RAY_ADDRESS)
    return ray.get(square.remote(x))
