"""One environment per plugin, for previews with --backend kubernetes (nothing runs)."""

import engine
from providers.pytorch import Elastic, RunPolicy
from providers.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
from providers.spark import PodTemplate, Spark

ray_env = engine.TaskEnvironment(
    name="k8s_ray", image="rayproject/ray:2.40.0", resources=engine.Resources(cpu=1, memory="2Gi"),
    plugin_config=RayJobConfig(head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "0"}),
                               worker_node_config=[WorkerNodeConfig(group_name="cpu", replicas=2)]))

spark_env = engine.TaskEnvironment(
    name="k8s_spark", image="spark:3.5.5",
    plugin_config=Spark(spark_conf={"spark.executor.instances": "2", "spark.executor.memory": "1g",
                                    "spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"},
                        executor_pod=PodTemplate(pod_spec={"containers": [{"name": "primary",
                                                                           "resources": {"limits": {"cpu": "2"}}}]})))

pytorch_env = engine.TaskEnvironment(
    name="k8s_pytorch", image="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    plugin_config=Elastic(nnodes="1:2", nproc_per_node=2, run_policy=RunPolicy(clean_pod_policy="all")))

# A pod template with a misspelt container field: the server would drop it without a word.
ray_typo = engine.TaskEnvironment(
    name="k8s_ray_typo",
    plugin_config=RayJobConfig(worker_node_config=[WorkerNodeConfig(
        group_name="cpu", pod_template={"containers": [{"name": "ray-worker", "imagePullPolicyy": "Always"}]})]))


@ray_env.task
def ray_task() -> str:
    return "ray"


@spark_env.task
def spark_task() -> str:
    return "spark"


@pytorch_env.task
def pytorch_task() -> str:
    return "pytorch"


@ray_typo.task
def ray_typo_task() -> str:
    return "never"
