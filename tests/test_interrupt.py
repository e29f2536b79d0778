"""Ctrl-C (SIGINT) and SIGTERM of `engine up`: the run drains, tears down, and says so."""

import signal

import pytest

from conftest import TASKS, processes_under, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_the_task_tears_down(engine, tmp_path, sig):
    marker = tmp_path / "started"
    p = engine.spawn("up", f"{TASKS}/dask_tasks.py:slow", "-i", "seconds=60", "-i", f"marker={marker}")
    wait_for(marker.exists, 90, what="the task body")
    p.send_signal(sig)
    assert p.wait(timeout=60) == 130
    stderr = p.stderr.read()
    assert "deleted" in stderr and "interrupted" in stderr
    assert not processes_under(tmp_path)
    assert engine.resources() == []
    [run] = engine.runs()
    assert run["status"] == "interrupted"
