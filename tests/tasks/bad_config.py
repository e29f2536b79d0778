from providers.dask import Dask, WorkerGroup

import engine

env = engine.TaskEnvironment(name="bad", plugin_config=Dask(workers=WorkerGroup(number_of_workers=-1)))


@env.task
def t() -> int:
    return 1
