"""Tasks with no plugin: the engine's own cost and the SDK's call semantics."""

import engine

env = engine.TaskEnvironment(name="plain")
other = engine.TaskEnvironment(name="plain_other")


@env.task
def add(a: int, b: int = 1) -> int:
    return a + b


@other.task
def child(x: int) -> dict:
    tc = engine.ctx()
    return {"x": x, "run": tc.run_id, "stack": tc.stack}


@env.task
def parent(x: int) -> dict:
    tc = engine.ctx()
    return {"same_env": add(x, 1), "child": child(x), "run": tc.run_id}


@env.task
async def aparent(x: int) -> int:
    return await achild(x)


@other.task
async def achild(x: int) -> int:
    return x * 10
