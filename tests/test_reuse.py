"""ReusePolicy: the cluster outlives the run, is reused unchanged, scaled in place, repaired
after drift, and destroyed once idle past its TTL with nobody running a command."""

import json
import os
import sqlite3
import time

import psutil
import pytest

from conftest import TASKS, processes_under, wait_for

pytestmark = pytest.mark.slow

TARGET = f"{TASKS}/reuse_tasks.py:info"


def _up(engine, workers, ttl=300):
    r = engine("up", TARGET, "--json", env={"DASK_WORKERS": str(workers), "IDLE_TTL": str(ttl)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _preview(engine, workers):
    return engine.json("preview", TARGET, env={"DASK_WORKERS": str(workers)})


def _recorded(engine):
    conn = sqlite3.connect(f"file:{engine.state}?mode=ro", uri=True)
    try:
        return [json.loads(r[0]) for r in conn.execute("select outputs from resources")]
    finally:
        conn.close()


def test_reuse_scale_in_place_and_destroy(engine, tmp_path):
    first = _up(engine, 2)
    assert first["outputs"]["workers"] == 2
    assert [s["op"] for s in first["steps"]] == ["create"] and first["teardown"] == []
    [rec] = engine.resources()
    assert rec["run_id"] is None  # reusable: owned by the stack, not by the run
    sched_pid = rec["outputs"]["scheduler"]["pid"]
    shown = engine.json("state", "show", rec["urn"])
    assert shown["inputs"]["workers"]["number_of_workers"] == 2 and shown["idle_ttl"] == 300
    assert shown["ephemeral"] is False

    plan = _preview(engine, 2)
    assert plan["summary"]["same"] == 1 and plan["summary"]["create"] == 0
    second = _up(engine, 2)
    assert second["outputs"]["address"] == first["outputs"]["address"]
    assert [s["op"] for s in second["steps"]] == ["same"]

    plan = _preview(engine, 3)
    [step] = plan["steps"]
    assert step["op"] == "update"
    assert step["diff"] == {"workers.number_of_workers": {"old": 2, "new": 3}}
    third = _up(engine, 3)
    assert third["outputs"] == {"address": first["outputs"]["address"], "workers": 3}
    assert engine.resources()[0]["outputs"]["scheduler"]["pid"] == sched_pid  # the scheduler kept running

    fourth = _up(engine, 1)
    assert fourth["outputs"]["workers"] == 1
    assert len(engine.resources()[0]["outputs"]["workers"]) == 1

    r = engine("destroy", "reuse_t")
    assert r.returncode == 0, r.stderr
    assert engine.resources() == []
    assert not processes_under(tmp_path)


def test_drift_dead_worker_and_dead_scheduler_are_repaired(engine, tmp_path):
    _up(engine, 2)
    [rec] = engine.resources()
    victim = next(iter(rec["outputs"]["workers"].values()))["pid"]
    psutil.Process(victim).kill()
    wait_for(lambda: not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE, 10)
    refreshed = engine.json("refresh", "reuse_t")
    assert len(refreshed["reuse_t"][0]["outputs"]["workers"]) == 1
    plan = _preview(engine, 2)
    assert plan["steps"][0]["op"] == "update"
    again = _up(engine, 2)
    assert again["outputs"]["workers"] == 2

    os.killpg(engine.resources()[0]["outputs"]["scheduler"]["pid"], 9)
    time.sleep(0.5)
    recreated = _up(engine, 2)
    assert [s["op"] for s in recreated["steps"]] == ["create"]
    assert recreated["outputs"]["workers"] == 2
    assert engine("destroy", "reuse_t").returncode == 0
    assert not processes_under(tmp_path)


def test_idle_ttl_destroys_without_a_command(engine, tmp_path):
    _up(engine, 1, ttl=3)
    assert processes_under(tmp_path)
    wait_for(lambda: not _recorded(engine), 60, 0.2, "the reaper to destroy the idle cluster")
    wait_for(lambda: not processes_under(tmp_path), 20, 0.2, "the cluster's processes to end")
    conn = sqlite3.connect(f"file:{engine.state}?mode=ro", uri=True)
    runs = conn.execute("select task, kind, status from runs order by started").fetchall()
    conn.close()
    assert runs[-1] == ("idle_ttl expired", "reap", "succeeded")
    history = engine.runs()
    assert history[-1]["task"] == "idle_ttl expired"
