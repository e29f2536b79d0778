"""Two `engine up` on one stack: one waits or exits 3 naming the holder; different stacks run
in parallel."""

import os
import re
import socket

import pytest

from conftest import TASKS, wait_for

pytestmark = pytest.mark.slow


def test_second_up_on_a_locked_stack_exits_3_naming_the_holder(engine, tmp_path):
    marker = tmp_path / "started"
    first = engine.spawn("up", f"{TASKS}/dask_tasks.py:slow", "-i", "seconds=3", "-i", f"marker={marker}")
    wait_for(marker.exists, 90, what="the first run's task")
    r = engine("up", f"{TASKS}/dask_tasks.py:workers")
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert f"pid {first.pid}" in line and socket.gethostname() in line and "up dask_t.slow" in line
    lock_id = re.search(r"engine unlock dask_t (\w+)", line).group(1)
    assert lock_id
    waited = engine("up", f"{TASKS}/dask_tasks.py:workers", "--lock-timeout", "120")
    assert waited.returncode == 0, waited.stderr
    assert "waiting for the lock held by pid" in waited.stderr
    assert first.wait(timeout=60) == 0
    assert [r["status"] for r in engine.runs()] == ["succeeded", "succeeded"]


def test_different_stacks_run_in_parallel(engine, tmp_path):
    a = engine.spawn("up", f"{TASKS}/parallel_tasks.py:hold_a", "-i", "seconds=4")
    b = engine.spawn("up", f"{TASKS}/parallel_tasks.py:hold_b", "-i", "seconds=4")
    assert a.wait(timeout=120) == 0, a.stderr.read()
    assert b.wait(timeout=120) == 0, b.stderr.read()
    runs = {r["stack"]: r for r in engine.runs()}
    assert set(runs) == {"par_a", "par_b"}
    # Both were running at once: each started before the other finished.
    assert runs["par_a"]["started"] < runs["par_b"]["finished"]
    assert runs["par_b"]["started"] < runs["par_a"]["finished"]


def test_unlock_breaks_a_lock_with_a_matching_id(engine, tmp_path):
    from engine.lock import StackLock

    holder = StackLock(engine.state, "some_stack", "test").acquire()
    try:
        wrong = engine("unlock", "some_stack", "nope")
        assert wrong.returncode == 2 and "does not match" in wrong.stderr
        ok = engine("unlock", "some_stack", holder.lock_id)
        assert ok.returncode == 0, ok.stderr
        assert f"pid {os.getpid()}" in ok.stdout
        again = StackLock(engine.state, "some_stack", "test").acquire()
        again.release()
    finally:
        holder.release()
