"""Dask tasks the tests run through the real CLI."""

import os
import time
from pathlib import Path

import engine
from providers.dask import Dask, WorkerGroup

env = engine.TaskEnvironment(name="dask_t", plugin_config=Dask(workers=WorkerGroup(number_of_workers=2)))


def square(x):
    return x * x


@env.task
def squares(n: int = 4) -> list:
    from distributed import Client

    with Client() as c:
        return c.gather(c.map(square, range(n)))


@env.task
def workers() -> int:
    from distributed import Client

    with Client() as c:
        return len(c.scheduler_info(n_workers=-1)["workers"])


@env.task
def slow(seconds: float = 60.0, marker: str = "") -> str:
    """Signals that the body started (a marker file), then sleeps: the crash tests kill it here."""
    if marker:
        Path(marker).write_text(os.environ["DASK_SCHEDULER_ADDRESS"])
    time.sleep(seconds)
    return "done"


@env.task
def boom() -> None:
    raise ValueError("the task body raised on purpose")
