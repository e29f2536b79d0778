"""Ray tasks the tests run through the real CLI. Replica counts and the existing cluster's
address come from the environment, so a test can change them between runs of one stack."""

import os
import time
from pathlib import Path

import ray

import engine
from providers.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

env = engine.TaskEnvironment(name="ray_t", plugin_config=RayJobConfig(
    worker_node_config=[WorkerNodeConfig(group_name="w", replicas=int(os.environ.get("RAY_REPLICAS", "1")),
                                         ray_start_params={"resources": '{"taskrig_w": 1}'})],
    head_node_config=HeadNodeConfig(requests=engine.Resources(cpu=1, memory="512Mi")),
    runtime_env={"env_vars": {"FROM_RUNTIME_ENV": "yes"}},
))

reuse = engine.TaskEnvironment(
    name="ray_reuse",
    plugin_config=RayJobConfig(worker_node_config=[
        WorkerNodeConfig(group_name="w", replicas=int(os.environ.get("RAY_REPLICAS", "1")))]),
    reusable=engine.ReusePolicy(idle_ttl=600),
)

existing = engine.TaskEnvironment(name="ray_addr", plugin_config=RayJobConfig(
    worker_node_config=[], address=os.environ.get("RAY_TEST_ADDRESS", "127.0.0.1:1")))


@ray.remote(num_cpus=1)
def where() -> tuple:
    return ray.get_runtime_context().get_node_id(), os.environ.get("FROM_RUNTIME_ENV")


def _survey() -> dict:
    """Pins one remote call to every alive node: each of them really runs tasks."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init()
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    ran = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                   for n in alive], timeout=120)
    return {"alive": len(alive), "ran_on": sorted(r[0] for r in ran) == alive, "env": sorted({r[1] for r in ran}),
            "address": os.environ["RAY_ADDRESS"], "nodes": alive, "resources": ray.cluster_resources()}


@env.task
def survey() -> dict:
    return _survey()


@reuse.task
def reuse_survey() -> dict:
    return _survey()


@existing.task
def existing_survey() -> dict:
    return _survey()


@env.task
def slow(seconds: float = 120.0, marker: str = "") -> str:
    """Signals that the body started (a marker file), then sleeps: the crash test kills it here."""
    ray.init()
    if marker:
        Path(marker).write_text(os.environ["RAY_ADDRESS"])
    time.sleep(seconds)
    return "done"
