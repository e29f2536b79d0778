"""Dask tasks on the kubernetes backend. The real Dask operator makes the pods, from the task
image of the test cluster (K8S_T_IMAGE); the bodies run in a pod of their own beside it and
report the address they were given."""

import os

import engine
from providers.dask import Dask, Scheduler, WorkerGroup

env = engine.TaskEnvironment(name="k8s_dask", plugin_config=Dask(workers=WorkerGroup(number_of_workers=2)),
                             backend="kubernetes", image=os.environ.get("K8S_T_IMAGE", "ghcr.io/dask/dask:2025.4.1"),
                             resources=engine.Resources(cpu="500m", memory="512Mi"))

# Reusable, sized from the environment so a test can change the config between runs.
reuse = engine.TaskEnvironment(
    name="k8s_reuse",
    plugin_config=Dask(scheduler=Scheduler(image=os.environ.get("K8S_T_SCHED_IMAGE") or None),
                       workers=WorkerGroup(number_of_workers=int(os.environ.get("K8S_T_WORKERS", "2")))),
    backend="kubernetes", reusable=engine.ReusePolicy(idle_ttl=600))


@env.task
def addr() -> str:
    return os.environ["DASK_SCHEDULER_ADDRESS"]


@reuse.task
def reuse_addr() -> str:
    return os.environ["DASK_SCHEDULER_ADDRESS"]


from providers.pytorch import Elastic  # noqa: E402

pt = engine.TaskEnvironment(name="k8s_pt", plugin_config=Elastic(nnodes="1:2", nproc_per_node=2), backend="kubernetes")


@pt.task
def rdzv() -> str:
    """In-process on this backend (the job's pods run the image's code); sees the endpoint."""
    return os.environ["PET_RDZV_ENDPOINT"]
