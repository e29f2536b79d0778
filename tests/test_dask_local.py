"""The seed's Dask example and the Dask provider on the local backend, through the real CLI."""

import json

import pytest

from conftest import EXAMPLES, TASKS, processes_under
from providers.local.process import find_tagged

pytestmark = pytest.mark.slow


def test_seed_example_runs_with_four_workers_and_leaves_nothing(engine, tmp_path, state_url):
    """On both state backends (``state_url``: SQLite, PostgreSQL)."""
    r = engine("up", f"{EXAMPLES}/dask_example.py:process_data", "-i", "data=[1,2,3,4,5,6,7,8]", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "succeeded"
    assert doc["outputs"] == [1, 4, 9, 16, 25, 36, 49, 64]
    created = [s for s in doc["applied"] if s["op"] == "create"]
    assert len(created) == 1 and created[0]["type"] == "local:dask:Cluster"
    assert len(created[0]["outputs"]["workers"]) == 4
    assert [s["op"] for s in doc["teardown"]] == ["delete"]
    assert not processes_under(tmp_path)
    assert not find_tagged("dask_env-", prefix=True)
    assert engine.resources() == []
    runs = engine.runs()
    assert [r["status"] for r in runs] == ["succeeded"]


def test_text_output_streams_steps_and_prints_result(engine):
    r = engine("up", f"{TASKS}/dask_tasks.py:workers")
    assert r.returncode == 0, r.stderr
    assert "Result: 2" in r.stdout
    assert "+  local:dask:Cluster  cluster  created (" in r.stderr
    assert "-  local:dask:Cluster  cluster  deleted (" in r.stderr
    assert "Resources: 1 to create" in r.stderr


def test_preview_renders_plan_text_and_json(engine):
    r = engine("preview", f"{EXAMPLES}/dask_example.py:process_data")
    assert r.returncode == 0, r.stderr
    assert "+  local:dask:Cluster  cluster  create" in r.stdout
    assert '"number_of_workers": 4' in r.stdout
    assert "Resources: 1 to create" in r.stdout
    doc = engine.json("preview", f"{EXAMPLES}/dask_example.py:process_data")
    assert set(doc) == {"format_version", "stack", "steps", "summary"}
    assert doc["stack"] == "dask_env"
    step = doc["steps"][0]
    assert set(step) >= {"op", "urn", "type", "inputs", "diff"}
    assert step["op"] == "create" and step["urn"] == "urn:engine:dask_env::local:dask:Cluster::cluster"
    assert step["inputs"]["workers"]["number_of_workers"] == 4
    assert doc["summary"] == {"create": 1, "update": 0, "replace": 0, "delete": 0, "options": 0, "same": 0}
    assert engine("preview", f"{EXAMPLES}/dask_example.py:process_data", "--detailed-exitcode").returncode == 2
    assert not engine.state.exists(), "preview must not create or write the state"


def test_task_that_raises_prints_traceback_exits_1_and_tears_down(engine, tmp_path):
    r = engine("up", f"{TASKS}/dask_tasks.py:boom")
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert "ValueError: the task body raised on purpose" in r.stderr
    assert "deleted" in r.stderr
    assert engine.resources() == []
    assert not processes_under(tmp_path)
    run = engine.runs()[-1]
    assert run["status"] == "failed" and "ValueError" in run["error"]


def test_in_process_run_returns_outputs_and_record(engine, tmp_path):
    import engine as flyte
    from tasks import dask_tasks

    out, run = flyte.with_runcontext(state=engine.state).run(dask_tasks.squares, n=5)
    assert out == [0, 1, 4, 9, 16]
    assert run["status"] == "succeeded" and run["stack"] == "dask_t"
    assert flyte.run.__doc__
    assert not processes_under(tmp_path)
