"""Tasks that an OpenAI Agents agent calls as tools (never a real model: the tests script one)."""

import engine
from providers.dask import Dask, WorkerGroup
from providers.openai import function_tool

env = engine.TaskEnvironment(name="openai_t")
dask_env = engine.TaskEnvironment(name="openai_dask", plugin_config=Dask(workers=WorkerGroup(number_of_workers=1)))


@function_tool
@env.task
def get_weather(city: str, unit: str = "C") -> str:
    """Get the current weather for a city.

    Args:
        city: The city to look up.
        unit: C or F.
    """
    tc = engine.ctx()
    return f"The weather in {city} is sunny, 22 {unit} (run {tc.run_id})"


@env.task
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


add_tool = function_tool(add, name_override="add_numbers")


@function_tool
@dask_env.task
def square_sum(n: int) -> int:
    """Sum of squares below n, computed on a Dask cluster provisioned for the call."""
    from distributed import Client

    with Client() as c:
        return sum(c.gather(c.map(lambda x: x * x, range(n))))


@function_tool
def shout(text: str) -> str:
    """A plain function: the SDK's own tool."""
    return text.upper()


@function_tool
@env.task
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"tool failed: {reason}")
