"""Connector tasks through the real CLI against a real HTTP training service on 127.0.0.1:
the seed's example (only its imports changed), the HTTP job connector, resume after kill -9,
cancel on failure, timeout, Ctrl-C and destroy, secrets kept out of the state and the output."""

import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal

import pytest

from conftest import EXAMPLES, TASKS
from tasks.connector_support import TrainService, job_recorded, resources, wait_for

SEED = f"{EXAMPLES}/connector_example.py"
HTTP = f"{TASKS}/connector_http.py"
JOBS = f"{TASKS}/connector_jobs.py"


@pytest.fixture
def train(tmp_path):
    service = TrainService(tmp_path / "mltrain", epoch_seconds=0.2)
    yield service
    service.stop()


def _jobs(train) -> list[dict]:
    return list(train.stats()["jobs"].values())


def _state_bytes(engine) -> bytes:
    folder = engine.state.parent
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- the SDK itself
def test_resource_meta_round_trips_and_registry_refuses_duplicates():
    from engine.connectors import AsyncConnector, ConnectorRegistry, ResourceMeta

    @dataclasses.dataclass
    class Inner:
        a: int

    @dataclasses.dataclass
    class Meta(ResourceMeta):
        job_id: str
        inner: Inner
        tries: int = 0

    m = Meta(job_id="j1", inner=Inner(a=3), tries=2)
    assert Meta.decode(m.encode()) == m

    class Dup(AsyncConnector):
        task_type_name = "test_dup_type"

        async def create(self, task_template, inputs=None, **kw): ...
        async def get(self, resource_meta, **kw): ...
        async def delete(self, resource_meta, **kw): ...

    # Defined but not registered: a lookup finds and registers it; a second one is a duplicate.
    found = ConnectorRegistry.get_connector("test_dup_type")
    assert isinstance(found, Dup)
    with pytest.raises(ValueError, match="already registered"):
        ConnectorRegistry.register(Dup())
    ConnectorRegistry.register(Dup(), override=True)


def test_literals_round_trip_in_flytes_encodings():
    from engine.connectors import literals
    from engine.io import File

    values = {"i": 3, "f": 1.5, "s": "x", "b": True, "n": None, "l": [1, 2], "d": {"a": [1, "x"]},
              "file": File("/tmp/m.txt"), "t": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
              "dur": dt.timedelta(seconds=90)}
    back = literals.from_inputs(literals.to_inputs(values))
    assert back == values
    assert literals.to_literal({"a": 1}).scalar.binary.tag == "msgpack"  # as Flyte sends dicts


def test_task_inputs_are_checked_and_name_the_field():
    from engine.errors import ConfigError
    from tasks import connector_http

    with pytest.raises(ConfigError, match=r"inputs of http_train\.epochs: expected int, got str"):
        connector_http.train.bind(epochs="three")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        connector_http.train.bind(nope=1)


# ---------------------------------------------------------------------------- the seed example
def test_seed_example_runs_and_returns_its_results(engine, train):
    doc = engine.json("up", f"{SEED}:train_model", "-i", "epochs=2", env=train.env)
    assert doc["status"] == "succeeded"
    with open(doc["outputs"]) as f:  # the File the training service wrote
        assert f.read() == "trained on gs://my-bucket/dataset.csv for 2 epochs\n"
    stats = train.stats()
    assert stats["posts"] == 1 and stats["deletes"] == 0  # a succeeded job is not cancelled
    assert engine.resources() == [] and engine.journal_open() == []
    runs = engine.runs()
    assert [(r["stack"], r["task"], r["status"]) for r in runs] == [
        ("hello_world", "hello_world.train_model", "succeeded"), ("hello_world", "model_train", "succeeded")]


def test_preview_shows_the_job_that_would_be_created(engine, train):
    doc = engine.json("preview", f"{SEED}:model_train_task", "-i", "epochs=3", "-i", "dataset_uri=gs://b/d.csv",
                      env=train.env)
    [step] = doc["steps"]
    assert step["op"] == "create" and step["type"] == "connector:external_model_training:Job"
    assert step["inputs"]["inputs"] == {"dataset_uri": "gs://b/d.csv", "epochs": 3}
    assert step["inputs"]["template"]["custom"] == {"endpoint": "https://example-mltrain.com"}
    assert step["inputs"]["connector"]["class"] == "ModelTrainingConnector"
    assert not engine.state.exists() and train.stats()["posts"] == 0


@pytest.mark.slow
def test_kill9_while_polling_then_up_resumes_the_same_job(engine, train):
    """The next `up` adopts the recorded job and polls it to the end: one POST in all."""
    p = engine.spawn("up", f"{SEED}:train_model", "-i", "epochs=15", env=train.env)
    wait_for(lambda: job_recorded(engine.state), 30, "the job's ResourceMeta in the state")
    wait_for(lambda: train.stats()["gets"] >= 1, 15, "polling to start")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    [job] = _jobs(train)
    assert job["status"] == "running"
    r = engine("up", f"{SEED}:train_model", "-i", "epochs=15", env=train.env)
    assert r.returncode == 0, r.stderr
    assert "kept 1 external job(s) for the next run to resume" in r.stderr
    assert "resumes the job of run" in r.stderr
    stats = train.stats()
    assert stats["posts"] == 1 and stats["deletes"] == 0
    [job] = _jobs(train)
    assert job["status"] == "finished" and job["results"] in r.stdout
    assert engine.resources() == [] and engine.journal_open() == []
    assert sorted(r["status"] for r in engine.runs()) == ["crashed", "crashed", "succeeded", "succeeded"]


@pytest.mark.slow
def test_kill9_while_polling_then_destroy_deletes_the_job(engine, train):
    p = engine.spawn("up", f"{SEED}:train_model", "-i", "epochs=100", env=train.env)
    wait_for(lambda: job_recorded(engine.state), 30, "the job's ResourceMeta in the state")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    r = engine("destroy", "hello_world", env=train.env)
    assert r.returncode == 0, r.stderr
    [job] = _jobs(train)
    assert job["status"] == "cancelled" and train.stats()["deletes"] == 1
    assert engine.resources() == [] and engine.journal_open() == []


# ---------------------------------------------------------------------------- the HTTP job connector
@pytest.fixture
def http(tmp_path):
    token = "tok-" + os.urandom(8).hex()
    service = TrainService(tmp_path / "http", epoch_seconds=0.2, token_env="TRAIN_TOKEN", env={"TRAIN_TOKEN": token})
    service.env.update({"TRAIN_URL": service.url, "TRAIN_TOKEN": token})
    yield service
    service.stop()


def test_http_job_with_a_secret_token_never_recorded(engine, http):
    r = engine("up", f"{HTTP}:train", "-i", "epochs=2", env=http.env)
    assert r.returncode == 0, r.stderr
    [job] = _jobs(http)
    assert job["status"] == "finished" and job["results"] in r.stdout
    token = http.env["TRAIN_TOKEN"].encode()
    assert token not in _state_bytes(engine)
    assert token.decode() not in r.stdout + r.stderr
    assert engine.resources() == []


def test_http_job_without_its_secret_is_bad_input(engine, http):
    env = {k: v for k, v in http.env.items() if k != "TRAIN_TOKEN"}
    r = engine("up", f"{HTTP}:train", env=env)
    assert r.returncode == 2, r.stderr
    assert "secret 'TRAIN_TOKEN' is not set" in r.stderr
    assert http.stats()["posts"] == 0 and not engine.state.exists()


def test_http_transient_get_errors_are_retried(engine, http):
    r = engine("up", f"{HTTP}:train", "-i", "flaky_gets=3", "-i", "seconds=0.5", env=http.env)
    assert r.returncode == 0, r.stderr
    assert "get failed (HTTPStatusError" in r.stderr and "retrying" in r.stderr
    assert http.stats()["gets"] >= 4


def test_http_job_failure_is_the_run_failure_and_deletes(engine, http):
    r = engine("up", f"{HTTP}:train", "-i", "fail=true", "-i", "seconds=0.3", env=http.env)
    assert r.returncode == 1
    assert "the job ended FAILED: the loss diverged" in r.stderr
    assert http.stats()["deletes"] == 1
    [run] = engine.runs()
    assert run["status"] == "failed" and engine.resources() == []


def test_http_timeout_cancels_the_job(engine, http):
    r = engine("up", f"{HTTP}:train", "-i", "seconds=30", env={**http.env, "TRAIN_TIMEOUT": "1"})
    assert r.returncode == 1
    assert "did not finish within the task timeout of 1 s" in r.stderr
    [job] = _jobs(http)
    assert job["status"] == "cancelled"
    assert engine.resources() == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_cancel_the_job(engine, http, sig):
    p = engine.spawn("up", f"{HTTP}:train", "-i", "seconds=60", env=http.env)
    wait_for(lambda: job_recorded(engine.state), 30, "the job's ResourceMeta in the state")
    wait_for(lambda: http.stats()["gets"] >= 1, 15, "polling to start")
    p.send_signal(sig)
    assert p.wait(timeout=60) == 130
    [job] = _jobs(http)
    assert job["status"] == "cancelled"
    [run] = engine.runs()
    assert run["status"] == "interrupted"
    assert engine.resources() == [] and engine.journal_open() == []


def test_http_delete_of_a_finished_or_unknown_job_succeeds(http):
    from providers.connectors.http import HTTPJobConnector, HTTPJobMeta

    c, token = HTTPJobConnector(), http.env["TRAIN_TOKEN"]
    unknown = HTTPJobMeta(job_id="nope", job_url=f"{http.url}/nope")
    asyncio.run(c.delete(unknown, token=token))
    import urllib.request

    req = urllib.request.Request(http.url, data=json.dumps({"seconds": 0.01}).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    job_id = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req).read())["job_id"]
    meta = HTTPJobMeta(job_id=job_id, job_url=f"{http.url}/{job_id}", outputs={"results": "results"})
    wait_for(lambda: asyncio.run(c.get(meta, token=token)).phase == 3, 10, "the job to finish")  # SUCCEEDED
    asyncio.run(c.delete(meta, token=token))
    assert http.stats()["jobs"][job_id]["status"] == "finished"


# ---------------------------------------------------------------------------- calls inside a run
def test_connector_calls_inside_a_run_live_in_the_callers_stack(engine, train):
    env = {**train.env, "TRAIN_URL": train.url}
    r = engine("up", f"{JOBS}:two_jobs", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.split("Result:")[1]) == [1, 2]
    runs = engine.runs()
    assert [(x["stack"], x["status"]) for x in runs] == [("conn_parent", "succeeded")] * 3
    assert engine.resources() == []


def test_many_jobs_are_polled_concurrently_on_the_callers_loop(engine, train):
    env = {**train.env, "TRAIN_URL": train.url}
    r = engine("up", f"{JOBS}:fan_out", "-i", "n=24", "-i", "seconds=1.5", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(str(sum(range(24))))
    jobs = _jobs(train)
    assert len(jobs) == 24 and train.stats()["posts"] == 24
    # concurrent: every job started before the first one finished
    assert max(j["started"] for j in jobs) - min(j["started"] for j in jobs) < 1.5
    assert resources(engine.state) == []
