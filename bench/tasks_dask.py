"""The task bench_dask.py runs with ``engine up``: a trivial map on a Dask cluster of 4 workers.

    engine up bench/tasks_dask.py:square_sum -i n=100 --state /tmp/x/state.db
"""

import engine
from providers.dask import Dask, WorkerGroup

env = engine.TaskEnvironment(name="bench_dask", plugin_config=Dask(workers=WorkerGroup(number_of_workers=4)))


def square(x):
    return x * x


@env.task
def square_sum(n: int = 100) -> int:
    from distributed import Client

    with Client() as client:  # the provisioned cluster (DASK_SCHEDULER_ADDRESS)
        return sum(client.gather(client.map(square, range(n))))
