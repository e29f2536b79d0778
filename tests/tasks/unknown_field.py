from providers.dask import Dask, WorkerGroup

import engine

env = engine.TaskEnvironment(name="bad", plugin_config=Dask(workers=WorkerGroup(number_of_workerz=2)))


@env.task
def t() -> int:
    return 1
