"""Weights & Biases through the real CLI with the real wandb package, offline (no network): the
run is a resource of the engine's run, holds what the task logged, is finished with the task's
exit status, initialised per rank for launchers, and marked crashed after a kill -9."""

import json
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("wandb")

from conftest import TASKS, processes_under, wait_for  # noqa: E402
from providers.wandb import runtime  # noqa: E402

WB = f"{TASKS}/wandb_tasks.py"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture
def provider_ep(tmp_path):
    """Environment for a command that must find the W&B provider with no target loaded
    (``destroy``): through the ``taskrig.providers`` entry point. Until the installed
    distribution declares it, a one-file dist-info on PYTHONPATH declares it the same way."""
    from importlib.metadata import entry_points

    if any(ep.name == "wandb" for ep in entry_points(group="taskrig.providers")):
        return {}
    info = tmp_path / "ep" / "taskrig_wandb_ep-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: taskrig-wandb-ep\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[taskrig.providers]\nwandb = providers.wandb\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(info.parent), os.environ.get("PYTHONPATH")]))}


def wb_run(root: Path, run_id: str) -> dict:
    """What every segment of one W&B run recorded, read from its .wandb files."""
    doc = {"history": [], "summary": {}, "exit": None, "tags": [], "config": {}, "segments": 0}
    for path in runtime.run_files(str(root), run_id):
        doc["segments"] += 1
        for r in runtime.read_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "history":
                doc["history"].append({i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json)
                                       for i in r.history.item if not (i.nested_key or [i.key])[0].startswith("_")})
            elif kind == "summary":
                for u in r.summary.update:
                    doc["summary"]["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
            elif kind == "exit":
                doc["exit"] = r.exit.exit_code
            elif kind == "run":
                doc["tags"] = list(r.run.tags)
                doc["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update if u.key != "_wandb"})
    return doc


def test_the_run_holds_the_metrics_and_is_finished_at_teardown(engine, tmp_path):
    doc = engine.json("up", f"{WB}:train", "-i", "steps=3")
    run_id = doc["run_id"]
    assert doc["outputs"]["id"] == run_id  # the W&B run id is the engine's run id
    assert doc["outputs"]["project"] == "taskrig-tests" and doc["outputs"]["lr"] == 0.01
    assert [(s["op"], s["type"]) for s in doc["applied"]] == [("create", "wandb:index:Run")]
    assert [(s["op"], s["type"]) for s in doc["teardown"]] == [("delete", "wandb:index:Run")]
    assert doc["applied"][0]["inputs"]["mode"] == "offline"  # no API key: offline
    run_dir = Path(doc["applied"][0]["outputs"]["run_dir"])
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.endswith(run_id)
    wb = wb_run(tmp_path, run_id)
    assert [h["loss"] for h in wb["history"]] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert wb["exit"] == 0 and wb["tags"] == ["test"] and wb["config"] == {"lr": 0.01}
    assert engine.resources() == [] and engine.runs()[-1]["status"] == "succeeded"


def test_a_task_that_raised_leaves_a_finished_failed_run(engine, tmp_path):
    r = engine("up", f"{WB}:fails", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert "the training diverged on purpose" in doc["error"]
    run_id = engine.runs()[-1]["run_id"]
    wb = wb_run(tmp_path, run_id)
    assert [h["loss"] for h in wb["history"]] == [0.0, 1.0]
    assert wb["exit"] == 1  # finished, with the task's exit status
    assert engine.resources() == [] and engine.runs()[-1]["status"] == "failed"


def test_the_decorator_and_a_list_of_configs(engine, tmp_path):
    doc = engine.json("up", f"{WB}:decorated", "-i", "x=7")
    assert doc["outputs"] == {"id": doc["run_id"], "tags": ["decorated"], "project": "decorated"}
    assert wb_run(tmp_path, doc["run_id"])["history"] == [{"x": 7}]
    # The decorator gave that task a W&B run, not its environment's other tasks.
    assert engine.json("up", f"{WB}:no_wandb")["outputs"] is True
    doc = engine.json("up", f"{WB}:beside_dask", "-i", "n=4")
    assert doc["outputs"]["total"] == 14 and doc["outputs"]["dask"].startswith("tcp://")
    assert sorted(s["type"] for s in doc["applied"]) == ["local:dask:Cluster", "wandb:index:Run"]
    assert wb_run(tmp_path, doc["run_id"])["history"] == [{"total": 14}]
    assert engine.resources() == [] and not processes_under(tmp_path)


def test_the_decorator_over_a_plain_function_runs_each_call_in_a_run(tmp_path):
    from providers.wandb import get_wandb_run, wandb_init

    @wandb_init(project="sweep", mode="offline", dir=str(tmp_path))
    def objective(x: float) -> str:
        get_wandb_run().log({"y": x * 2})
        return get_wandb_run().id

    run_id = objective(1.5)
    assert get_wandb_run() is None
    wb = wb_run(tmp_path, run_id)
    assert wb["history"] == [{"y": 3.0}] and wb["exit"] == 0


def test_online_without_a_key_is_refused_before_anything_exists(engine, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import engine\nfrom providers.wandb import WandB\n"
                   "env = engine.TaskEnvironment(name='wb_bad', plugin_config=WandB(mode='online'))\n"
                   "@env.task\ndef t() -> int:\n    return 1\n")
    r = engine("up", f"{bad}:t")
    assert r.returncode == 2
    assert "plugin_config.mode: mode 'online' needs an API key" in r.stderr and "wandb_api_key" in r.stderr
    assert not engine.state.exists() and not (tmp_path / "wandb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task,expected", [
    ("ranks_auto_launch", lambda rid: [rid, None]),  # auto: rank 0 logs into the task's run, rank 1 not
    ("ranks_new_launch", lambda rid: [f"{rid}-rank0", f"{rid}-rank1"]),  # new: a run per rank
])
def test_per_rank_hook_under_torch_elastic(engine, tmp_path, task, expected):
    pytest.importorskip("torch")
    doc = engine.json("up", f"{WB}:{task}", timeout=300)
    rid = doc["run_id"]
    assert [r["run"] for r in doc["outputs"]] == expected(rid)
    for r in doc["outputs"]:
        if r["run"] is not None:
            wb = wb_run(tmp_path, r["run"])
            assert {"rank": r["rank"]} in wb["history"] and wb["exit"] == 0
    assert wb_run(tmp_path, rid)["exit"] == 0  # the engine's run, finished at teardown


@pytest.mark.slow
def test_pytorch_elastic_initialises_wandb_per_rank(engine, tmp_path):
    """Through the pytorch provider, once its workers enter engine.ctx().data["per_rank"]."""
    pytest.importorskip("torch")
    from importlib.util import find_spec

    worker = Path(find_spec("providers.pytorch").origin).with_name("worker.py")
    if "per_rank" not in worker.read_text():
        pytest.skip("providers.pytorch does not enter the per-rank hooks (engine.ctx().data['per_rank']) yet")
    doc = engine.json("up", f"{TASKS}/wandb_elastic.py:ranks", timeout=300)
    rid = doc["run_id"]
    assert doc["outputs"] == {"run": f"{rid}-rank0", "world_size": 2}
    for rank, run_id in enumerate([f"{rid}-rank0", f"{rid}-rank1"]):
        wb = wb_run(tmp_path, run_id)
        assert wb["history"] == [{"rank": rank}] and wb["exit"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["destroy", "up"])
def test_kill_9_mid_task_leaves_a_run_the_next_command_marks_crashed(engine, tmp_path, provider_ep, command):
    marker = tmp_path / "started"
    p = engine.spawn("up", f"{WB}:slow", "-i", f"marker={marker}")
    wait_for(marker.exists, 90, what="the task body to start")
    run_id = marker.read_text()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert wb_run(tmp_path, run_id)["exit"] is None  # nobody finished it
    assert engine.run_status()[-1] == "running"
    r = engine("destroy", "wandb_t", env=provider_ep) if command == "destroy" else engine("up", f"{WB}:train")
    assert r.returncode == 0, r.stderr
    runs = engine.runs()
    assert runs[0]["run_id"] == run_id and runs[0]["status"] == "crashed"
    wb = wb_run(tmp_path, run_id)
    assert wb["summary"]["engine/status"] == "crashed" and "died" in wb["summary"]["engine/error"]
    assert wb["exit"] == 1 and "crashed" in wb["tags"] and wb["segments"] == 2
    assert engine.resources() == [] and engine.journal_open() == []
