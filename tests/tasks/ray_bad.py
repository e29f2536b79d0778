"""A Ray config that is wrong in the way RAY_BAD names; the CLI must exit 2 naming the field."""

import os

import engine
from providers.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

BAD = os.environ.get("RAY_BAD", "replicas")
if BAD == "replicas":
    config = RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="w", replicas=-1)])
elif BAD == "unknown":
    config = RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="w", replicas=1, replicaz=2)])
elif BAD == "max":
    config = RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="w", replicas=3, max_replicas=2)])
else:  # a ray_start_params key that `ray start` does not know
    config = RayJobConfig(head_node_config=HeadNodeConfig(ray_start_params={"num-cpuz": "1"}))

env = engine.TaskEnvironment(name="ray_bad", plugin_config=config)


@env.task
def t() -> int:
    return 1
