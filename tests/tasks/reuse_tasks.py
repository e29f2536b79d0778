"""A reusable Dask environment; the worker count and TTL come from the environment so a test
can change the config between runs of the same stack."""

import os

import engine
from providers.dask import Dask, WorkerGroup

env = engine.TaskEnvironment(
    name="reuse_t",
    plugin_config=Dask(workers=WorkerGroup(number_of_workers=int(os.environ.get("DASK_WORKERS", "2")))),
    reusable=engine.ReusePolicy(idle_ttl=float(os.environ.get("IDLE_TTL", "300"))),
)


@env.task
def info() -> dict:
    from distributed import Client

    with Client() as c:
        return {"address": c.scheduler.address, "workers": len(c.scheduler_info(n_workers=-1)["workers"])}
