"""`engine connectors serve` spoken to with flyteidl2's own generated stubs, and remote
connectors: the engine as the gRPC client of our service and of Flyte's `c0` serving the same
connector, with the same lifecycle in state (resume after kill -9, DeleteTask on Ctrl-C)."""

import json
import os
import signal
import urllib.request

import grpc
import pytest
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import interface_pb2, literals_pb2, tasks_pb2, types_pb2
from flyteidl2.core.execution_pb2 import TaskExecution
from flyteidl2.task import common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import TASKS
from tasks.connector_support import (TrainService, flyte_connector_python, health_ok, job_recorded, resources,
                                     serve_connectors, start_c0, stop, wait_for)

JOBS = f"{TASKS}/connector_jobs.py"


@pytest.fixture
def train(tmp_path):
    service = TrainService(tmp_path / "mltrain", epoch_seconds=0.2)
    service.env["TRAIN_URL"] = service.url
    yield service
    service.stop()


@pytest.fixture
def ours(train):
    proc, address, metrics = serve_connectors(JOBS, env=train.env, metrics=True)
    yield address, metrics
    stop(proc)


def _template(url: str, task_type: str = "test_training") -> tasks_pb2.TaskTemplate:
    """A task template built from flyteidl2's messages alone, as a Flyte client would send it."""
    t = tasks_pb2.TaskTemplate(type=task_type, interface=interface_pb2.TypedInterface(
        inputs=interface_pb2.VariableMap(variables=[
            interface_pb2.VariableEntry(key="epochs", value=interface_pb2.Variable(
                type=types_pb2.LiteralType(simple=types_pb2.INTEGER))),
            interface_pb2.VariableEntry(key="seconds", value=interface_pb2.Variable(
                type=types_pb2.LiteralType(simple=types_pb2.FLOAT)))])))
    t.custom.update({"url": url})
    return t


def _inputs(epochs: int, seconds: float) -> common_pb2.Inputs:
    lit = lambda **p: literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(**p)))  # noqa: E731
    return common_pb2.Inputs(literals=[common_pb2.NamedLiteral(name="epochs", value=lit(integer=epochs)),
                                       common_pb2.NamedLiteral(name="seconds", value=lit(float_value=seconds))])


def test_flyteidl2_stub_client_creates_polls_and_deletes(ours, train):
    address, metrics = ours
    category = connector_pb2.TaskCategory(name="test_training", version=0)
    with grpc.insecure_channel(address) as ch:
        stub = service_pb2_grpc.AsyncConnectorServiceStub(ch)
        meta = stub.CreateTask(connector_pb2.CreateTaskRequest(template=_template(train.url),
                                                               inputs=_inputs(3, 0.3)), timeout=10).resource_meta
        res = wait_for(lambda: (r := stub.GetTask(connector_pb2.GetTaskRequest(
            resource_meta=meta, task_category=category), timeout=10).resource).phase == TaskExecution.SUCCEEDED and r,
            20, "the job to succeed", 0.1)
        outputs = {nl.name: nl.value.scalar.primitive for nl in res.outputs.literals}
        assert outputs["epochs"].integer == 3 and outputs["results"].string_value.endswith(".txt")
        assert res.log_links[0].name == "job"

        long = stub.CreateTask(connector_pb2.CreateTaskRequest(template=_template(train.url),
                                                               inputs=_inputs(1, 60)), timeout=10).resource_meta
        stub.DeleteTask(connector_pb2.DeleteTaskRequest(resource_meta=long, task_category=category), timeout=10)
        job_id = json.loads(long)["job_id"]
        assert train.stats()["jobs"][job_id]["status"] == "cancelled"
        stub.DeleteTask(connector_pb2.DeleteTaskRequest(resource_meta=long, task_category=category), timeout=10)

        with pytest.raises(grpc.RpcError) as e:
            stub.CreateTask(connector_pb2.CreateTaskRequest(template=_template(train.url, "no_such_type")), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "no_such_type" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateTask(connector_pb2.CreateTaskRequest(template=_template(train.url, "test_broken")), timeout=10)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        assert "the broken connector always fails" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.GetTaskMetrics(connector_pb2.GetTaskMetricsRequest(resource_meta=meta, task_category=category))
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED

        md = service_pb2_grpc.ConnectorMetadataServiceStub(ch)
        names = {c.name: [(t.name, t.version) for t in c.supported_task_categories]
                 for c in md.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=10).connectors}
        assert names["Test Training Connector"] == [("test_training", 0)]
        got = md.GetConnector(connector_pb2.GetConnectorRequest(name="Broken Connector"), timeout=10).connector
        assert got.supported_task_categories[0].name == "test_broken"
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "flyteidl2.connector.AsyncConnectorService", "flyteidl2.connector.ConnectorMetadataService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING

    text = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(metrics, timeout=10).read().decode()
    assert 'taskrig_connector_requests_total{code="OK",operation="create",task_type="test_training"} 2.0' in text
    assert 'taskrig_connector_requests_total{code="NOT_FOUND",operation="create",task_type="no_such_type"} 1.0' in text
    assert 'taskrig_connector_requests_total{code="INTERNAL",operation="create",task_type="test_broken"} 1.0' in text
    assert 'taskrig_connector_request_seconds_count{operation="get",task_type="test_training"}' in text


def test_connectors_list_loads_modules_and_the_entry_point_group(engine, tmp_path):
    r = engine("connectors", "list", "--modules", JOBS, "--json")
    assert r.returncode == 0, r.stderr
    assert {d["task_type"] for d in json.loads(r.stdout)} >= {"test_training", "test_broken"}
    # An installed distribution that declares connectors in the taskrig.connectors group.
    dist = tmp_path / "site" / "fake_connectors-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-connectors\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[taskrig.connectors]\ntraining = connector_jobs\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(TASKS), os.environ.get("PYTHONPATH", "")])}
    r = engine("connectors", "list", env=env)
    assert r.returncode == 0, r.stderr
    assert "Test Training Connector" in r.stdout and "test_training" in r.stdout


def test_engine_runs_a_connector_task_through_our_service(engine, ours, train):
    address, _ = ours
    r = engine("up", f"{JOBS}:train", "-i", "epochs=2", "-i", "seconds=0.3", "--json",
               env={**train.env, "ENGINE_CONNECTOR_ENDPOINTS": f"test_training={address}"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    path, epochs = doc["outputs"]
    assert epochs == 2 and path.endswith(".txt")
    [created] = doc["applied"]
    assert created["inputs"]["endpoint"] == address and created["inputs"]["connector"] is None
    assert created["outputs"]["where"] == address
    assert train.stats()["posts"] == 1


@pytest.mark.slow
def test_remote_job_resumes_after_kill9_and_is_deleted_on_ctrl_c(engine, ours, train):
    address, _ = ours
    args = ("up", f"{JOBS}:train", "-i", "epochs=1", "-i", "seconds=2.5", "--connector-endpoint",
            f"test_training={address}")
    p = engine.spawn(*args, env=train.env)
    rec = wait_for(lambda: job_recorded(engine.state), 30, "the job's ResourceMeta in the state")
    assert json.loads(rec["inputs"])["endpoint"] == address  # recorded before polling, as in-process
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    r = engine(*args, env=train.env)
    assert r.returncode == 0, r.stderr
    assert "resumes the job of run" in r.stderr and train.stats()["posts"] == 1

    p = engine.spawn("up", f"{JOBS}:train", "-i", "epochs=9", "-i", "seconds=60", "--connector-endpoint",
                     f"test_training={address}", env=train.env)
    wait_for(lambda: job_recorded(engine.state), 30, "the second job in the state")
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    cancelled = [j for j in train.stats()["jobs"].values() if j["epochs"] == 9]
    assert [j["status"] for j in cancelled] == ["cancelled"]
    assert resources(engine.state) == []


@pytest.fixture(scope="module")
def flyte_python():
    python = flyte_connector_python()
    if python is None:
        pytest.skip("the flyte[connector] venv could not be created (see the printed reason)")
    return python


@pytest.mark.slow
def test_engine_runs_a_connector_task_through_flytes_c0(engine, train, flyte_python):
    proc, address = start_c0(flyte_python, "connector_jobs", str(TASKS), env=train.env)
    try:
        assert health_ok(address)
        r = engine("up", f"{JOBS}:train", "-i", "epochs=3", "-i", "seconds=0.3", "--json", "--connector-endpoint",
                   f"test_training={address}", env=train.env)
        assert r.returncode == 0, r.stderr
        path, epochs = json.loads(r.stdout)["outputs"]
        assert epochs == 3 and open(path).read().endswith("for 3 epochs\n")

        p = engine.spawn("up", f"{JOBS}:train", "-i", "epochs=7", "-i", "seconds=60", "--connector-endpoint",
                         f"test_training={address}", env=train.env)
        wait_for(lambda: job_recorded(engine.state), 30, "the job in the state")
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 130
        assert [j["status"] for j in train.stats()["jobs"].values() if j["epochs"] == 7] == ["cancelled"]
        assert resources(engine.state) == []
    finally:
        stop(proc)
