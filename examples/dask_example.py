"""The seed's Dask example, with only its import lines changed (flyte -> engine,
flyteintegrations.dask -> providers.dask). ``image`` and ``transform`` are the two names the
seed leaves to the reader; they are defined first.

    engine up examples/dask_example.py:process_data -i 'data=[1,2,3,4,5,6,7,8]'
"""


def transform(x):
    return x * x


# Ignored by the local backend. On the kubernetes one, None is the engine's default task image
# (ENGINE_K8S_IMAGE; the local cluster's is in its env file), where the body and workers run.
image = None

# ---- the seed's example, verbatim but for its imports ----
from providers.dask import Dask, WorkerGroup
import engine as flyte

# Define the Dask cluster configuration
dask_config = Dask(
    workers=WorkerGroup(number_of_workers=4)
)

# Create a task environment that enables Dask
env = flyte.TaskEnvironment(
    name="dask_env",
    plugin_config=dask_config,
    image=image,
)

# Any task in this environment has access to the Dask cluster
@env.task
async def process_data(data: list) -> list:
    from distributed import Client

    client = Client()  # Automatically connects to the provisioned cluster
    futures = client.map(transform, data)
    return client.gather(futures)
