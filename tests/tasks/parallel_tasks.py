"""Two environments (two stacks) with no plugin, for the parallel-stacks test."""

import time

import engine

env_a = engine.TaskEnvironment(name="par_a")
env_b = engine.TaskEnvironment(name="par_b")


@env_a.task
def hold_a(seconds: float = 3) -> str:
    time.sleep(seconds)
    return "a"


@env_b.task
def hold_b(seconds: float = 3) -> str:
    time.sleep(seconds)
    return "b"
