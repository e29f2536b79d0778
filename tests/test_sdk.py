"""The SDK's names and call semantics, in-process: runs, child runs, reuse inside a run."""

import pytest

import engine as flyte
from engine.errors import ConfigError
from providers.dask import Dask, WorkerGroup
from tasks import plain


def test_calling_a_task_outside_a_run_starts_one(engine):
    assert plain.add(2, 3) == 5
    out, run = engine_run(engine, plain.add, a=1)
    assert out == 2 and run["status"] == "succeeded" and run["task"] == "plain.add"


def engine_run(eng, task, **inputs):
    return flyte.with_runcontext(state=eng.state).run(task, **inputs)


def test_same_environment_reuses_the_run_other_environment_starts_a_child(engine):
    out, run = engine_run(engine, plain.parent, x=4)
    assert out["same_env"] == 5
    assert out["run"] == run["run_id"]
    assert out["child"]["stack"] == "plain_other" and out["child"]["run"] != run["run_id"]
    runs = {r["run_id"]: r for r in engine.runs()}
    assert runs[out["child"]["run"]]["stack"] == "plain_other"
    import sqlite3

    conn = sqlite3.connect(engine.state)
    parent = conn.execute("select parent_run from runs where run_id = ?", [out["child"]["run"]]).fetchone()[0]
    conn.close()
    assert parent == run["run_id"]


def test_async_tasks(engine):
    import asyncio

    assert asyncio.run(plain.achild(3)) == 30
    out, _ = engine_run(engine, plain.aparent, x=2)
    assert out == 20


def test_config_errors_name_the_field_path():
    with pytest.raises(ConfigError, match=r"plugin_config\.workers\.number_of_workers"):
        flyte.TaskEnvironment(name="x", plugin_config=Dask(workers=WorkerGroup(number_of_workers=0)))
    with pytest.raises(ConfigError, match=r"plugin_config\.workers\.number_of_workers"):
        flyte.TaskEnvironment(name="x", plugin_config=Dask(workers=WorkerGroup(number_of_workers="4")))
    with pytest.raises(ConfigError, match=r"^resources\.cpu"):
        flyte.TaskEnvironment(name="x", resources={"cpu": "lots"})
    with pytest.raises(ConfigError, match=r"^reusable\.idle_ttl"):
        flyte.TaskEnvironment(name="x", reusable={"idle_ttl": -1})
    with pytest.raises(ConfigError, match="not a valid stack name"):
        flyte.TaskEnvironment(name="no spaces")


def test_resources_quantities():
    r = flyte.Resources(cpu="1500m", memory="250Mi")
    assert r.cpu_count() == 1.5 and r.threads() == 2 and r.memory_bytes() == 250 * 2**20
    assert flyte.Resources(memory="1G").memory_bytes() == 10**9


def test_missing_secret_is_an_error_before_provisioning(engine, monkeypatch):
    env = engine_mod_env("sec_env", secrets=[flyte.Secret(key="NOT_SET_ANYWHERE_123")])

    @env.task
    def t() -> int:
        return 1

    with pytest.raises(ConfigError, match="secret 'NOT_SET_ANYWHERE_123' is not set"):
        engine_run(engine, t)
    assert not engine.state.exists()


def engine_mod_env(name, **kw):
    return flyte.TaskEnvironment(name=name, **kw)
