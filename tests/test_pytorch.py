"""PyTorch elastic on the local backend, through the real CLI: the body runs on every rank
under torch.distributed.run, restarts follow max_restarts, a kill -9 of the engine leaks
nothing past the next command, and a bad config touches nothing."""

import hashlib
import json
import os
import signal
import sqlite3
import time

import pydantic
import pytest

from conftest import TASKS, processes_under, wait_for
from providers.local.process import find_tagged
from providers.pytorch import Elastic, RunPolicy

PT = f"{TASKS}/pytorch_tasks.py"


@pytest.mark.slow
def test_allreduce_across_two_ranks(engine, tmp_path):
    engine.env.pop("OMP_NUM_THREADS", None)  # unset, workers get 1 (torchrun's rule)
    r = engine("up", f"{PT}:allreduce", "-i", "base=3", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "succeeded"
    # ranks 0 and 1 contribute 3 and 4; rank 0's view is the task's result
    assert doc["outputs"] == {"sum": 7.0, "world_size": 2, "backend": "gloo", "rank": 0, "omp": "1"}
    assert "rank 1 of 2 sees 7.0" in r.stderr  # what the ranks print shows up, as it would in-process
    assert [s["type"] for s in doc["applied"]] == ["local:pytorch:ElasticJob"]
    assert [s["op"] for s in doc["teardown"]] == ["delete"]
    assert engine.resources() == []
    assert not processes_under(tmp_path)
    assert not (tmp_path / ".engine" / "runtime").exists() or not any((tmp_path / ".engine" / "runtime").iterdir())


@pytest.mark.slow
def test_in_process_run_of_an_imported_task(engine, tmp_path):
    """engine.run from Python: the function comes from an imported module, not a file the CLI
    loaded, and still reaches the workers."""
    import engine as flyte
    from tasks import pytorch_tasks

    out, run = flyte.with_runcontext(state=engine.state).run(pytorch_tasks.allreduce, base=10)
    assert out["sum"] == 21.0 and out["world_size"] == 2
    assert run["status"] == "succeeded"
    assert not processes_under(tmp_path)


@pytest.mark.slow
def test_two_agents_join_one_rendezvous(engine):
    r = engine("up", f"{PT}:nodes", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    # nproc_per_node=1: a world of 2 means both agents joined the one rendezvous
    assert json.loads(r.stdout)["outputs"] == {"sum": 2.0, "world_size": 2, "group_rank": 0}


@pytest.mark.slow
def test_failed_rank_is_restarted_when_max_restarts_allows(engine, tmp_path):
    marker = tmp_path / "failed-once"
    r = engine("up", f"{PT}:flaky_retried", "-i", f"marker={marker}", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    assert marker.read_text() == "0", "rank 1 should have failed on the first attempt"
    assert json.loads(r.stdout)["outputs"] == {"sum": 2.0, "restart": 1}
    assert engine.runs()[-1]["status"] == "succeeded"


@pytest.mark.slow
def test_failed_rank_fails_the_run_without_restarts(engine, tmp_path):
    marker = tmp_path / "failed-once"
    r = engine("up", f"{PT}:flaky", "-i", f"marker={marker}", timeout=120)
    assert r.returncode == 1, r.stderr
    assert marker.exists()
    assert "rank 1 failed on attempt 1 of 1: RuntimeError: rank 1 fails its first attempt on purpose" in r.stderr
    # the rank's own traceback, with the task file's frames and source lines
    assert f'File "{TASKS}/pytorch_tasks.py", line' in r.stderr and ", in _flaky" in r.stderr
    assert 'raise RuntimeError("rank 1 fails its first attempt on purpose")' in r.stderr
    run = engine.runs()[-1]
    assert run["status"] == "failed" and "rank 1 fails its first attempt" in run["error"]
    assert engine.resources() == []
    assert not processes_under(tmp_path)


@pytest.mark.slow
def test_active_deadline_stops_the_job(engine, tmp_path):
    t0 = time.monotonic()
    r = engine("up", f"{PT}:overdue", timeout=120)
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 60
    assert "ran past run_policy.active_deadline_seconds=3" in r.stderr
    assert engine.runs()[-1]["status"] == "failed"
    assert engine.resources() == []
    assert not processes_under(tmp_path)


@pytest.mark.slow
def test_kill_9_of_the_engine_leaks_nothing_after_destroy(engine, tmp_path):
    marker = tmp_path / "running"
    p = engine.spawn("up", f"{PT}:slow", "-i", f"marker={marker}")
    wait_for(lambda: all((tmp_path / f"running.{r}").exists() for r in (0, 1)) or p.poll() is not None,
             timeout=90, what="both ranks to start the body")
    assert p.poll() is None, p.communicate()[1]
    runs = _runs(engine)
    assert [s for _, s in runs] == ["running"]
    tag = f"pt_t-{runs[0][0]}-elastic"
    alive = find_tagged(tag)
    assert len(alive) >= 3, alive  # the agent and its two workers
    assert {str(pr.pid) for pr in alive} >= {(tmp_path / f"running.{r}").read_text() for r in (0, 1)}

    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert find_tagged(tag), "the job's processes should outlive the engine (own sessions)"

    # a fresh process: the provider comes from the taskrig.providers entry point
    r = engine("destroy", "pt_t", timeout=60)
    assert r.returncode == 0, r.stderr
    assert not find_tagged(tag)
    assert not processes_under(tmp_path)
    assert engine.resources() == []
    assert [s for _, s in _runs(engine)] == ["crashed"]
    assert engine.journal_open() == []


@pytest.mark.slow
def test_ctrl_c_during_the_task_stops_the_job_and_tears_down(engine, tmp_path):
    marker = tmp_path / "running"
    p = engine.spawn("up", f"{PT}:slow", "-i", f"marker={marker}")
    wait_for(lambda: all((tmp_path / f"running.{r}").exists() for r in (0, 1)) or p.poll() is not None,
             timeout=90, what="both ranks to start the body")
    os.killpg(p.pid, signal.SIGINT)  # the terminal's Ctrl-C: the engine's group, not the job's sessions
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert not processes_under(tmp_path)
    assert engine.resources() == []
    assert [s for _, s in _runs(engine)] == ["interrupted"]


def _runs(engine) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{engine.state}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("select run_id, status from runs order by started").fetchall()
    finally:
        conn.close()


def test_config_is_validated_at_construction():
    assert Elastic().nnodes == 1 and Elastic().rdzv_configs == {"timeout": 900, "join_timeout": 900}
    for kw, field in [({"nproc_per_node": 0}, "nproc_per_node"), ({"gpus": 1}, "gpus"),
                      ({"nnodes": "3:1"}, "nnodes"), ({"max_restarts": -1}, "max_restarts"),
                      ({"monitor_interval": 0}, "monitor_interval"), ({"rdzv_configs": {"a,b": 1}}, "rdzv_configs")]:
        with pytest.raises(pydantic.ValidationError) as e:
            Elastic(**kw)
        assert e.value.errors()[0]["loc"][0] == field
    with pytest.raises(pydantic.ValidationError):
        RunPolicy(clean_pod_policy="sometimes")


@pytest.mark.parametrize("config,field", [
    ("Elastic(nproc_per_node=0)", "nproc_per_node"),
    ("Elastic(nproc_per_node=2, gpus_per_node=1)", "gpus_per_node"),
    ("Elastic(nnodes='4:2')", "nnodes"),
    ("Elastic(run_policy=RunPolicy(active_deadline_seconds=0))", "active_deadline_seconds"),
    ("Elastic(rdzv_backend='etcd')", "rdzv_backend"),  # valid for Flyte, refused by the local backend
])
def test_bad_config_exits_2_naming_the_field_and_leaves_state(engine, tmp_path, config, field):
    r = engine("up", f"{PT}:one")  # a recorded run, so there is a state to keep identical
    assert r.returncode == 0, r.stderr
    conn = sqlite3.connect(engine.state)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    before = hashlib.sha256(engine.state.read_bytes()).hexdigest()
    task = tmp_path / "bad_pt.py"
    task.write_text("import engine\nfrom providers.pytorch import Elastic, RunPolicy\n"
                    f"env = engine.TaskEnvironment(name='pt_bad', plugin_config={config})\n"
                    "@env.task\ndef t() -> int:\n    return 1\n")
    for cmd in ("up", "preview"):
        r = engine(cmd, f"{task}:t")
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and field in lines[0], r.stderr
    assert hashlib.sha256(engine.state.read_bytes()).hexdigest() == before
    assert not (tmp_path / ".engine" / "runtime").exists() or not any((tmp_path / ".engine" / "runtime").iterdir())
    assert not find_tagged("pt_bad-", prefix=True)


def test_preview_shows_the_job(engine):
    doc = engine.json("preview", f"{PT}:allreduce")
    step = doc["steps"][0]
    assert step["op"] == "create" and step["type"] == "local:pytorch:ElasticJob"
    assert step["urn"] == "urn:engine:pt_t::local:pytorch:ElasticJob::elastic"
    assert step["inputs"]["nproc_per_node"] == 2 and step["inputs"]["nnodes"] == "1"
    assert not engine.state.exists()
