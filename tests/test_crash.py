"""`kill -9` of `engine up` while it provisions, runs the task, or tears down: the next
command on the stack (up, refresh or destroy) leaves no process, an empty state, and the
dead run marked crashed."""

import os
import signal

import pytest

from conftest import TASKS, processes_under, wait_for
from providers.local.process import find_tagged

pytestmark = pytest.mark.slow

TARGET = f"{TASKS}/dask_tasks.py"


def _kill_group(p):
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def _crash(engine, tmp_path, phase):
    marker = tmp_path / "task-started"
    env = {"TASKRIG_FAULT_PAUSE": "delete:60"} if phase == "teardown" else None
    seconds = 0.5 if phase == "teardown" else 60
    p = engine.spawn("up", f"{TARGET}:slow", "-i", f"seconds={seconds}", "-i", f"marker={marker}", env=env)
    if phase == "provisioning":
        # The scheduler is up, the workers not all connected: the create is mid-flight.
        wait_for(lambda: engine.journal_open("create") and processes_under(tmp_path), 60, 0.01, "a create in flight")
        assert not marker.exists()
    elif phase == "task":
        wait_for(marker.exists, 90, what="the task body to start")
    else:
        wait_for(lambda: engine.journal_open("delete"), 90, what="the teardown's delete intent")
    _kill_group(p)
    assert processes_under(tmp_path), "the cluster should have outlived the engine"
    assert engine.run_status()[-1] in ("provisioning", "running", "tearing_down")


@pytest.mark.parametrize("phase,command", [
    ("provisioning", "up"), ("provisioning", "refresh"), ("provisioning", "destroy"),
    ("task", "up"), ("task", "refresh"), ("task", "destroy"),
    ("teardown", "up"), ("teardown", "refresh"), ("teardown", "destroy"),
])
def test_next_command_recovers_a_killed_run(engine, tmp_path, phase, command):
    _crash(engine, tmp_path, phase)
    if command == "up":
        r = engine("up", f"{TARGET}:workers")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("2")
    elif command == "refresh":
        r = engine("refresh", "dask_t")
        assert r.returncode == 0, r.stderr
    else:
        r = engine("destroy", "dask_t")
        assert r.returncode == 0, r.stderr
    assert not processes_under(tmp_path)
    assert not find_tagged("dask_t-", prefix=True)
    assert engine.resources() == []
    assert engine.journal_open() == []
    runs = engine.runs()
    assert runs[0]["status"] == "crashed"
    assert "died during" in runs[0]["error"]
