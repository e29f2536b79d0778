"""Runs in threads of one process never see each other's environment (issue 9).

Before engine/runenv.py each run wrote its variables into the process-wide ``os.environ``:
env A's task saw ``WHO=None``, env B's saw ``a``, and ``b`` stayed in the process. Here two
runs of different stacks meet at a barrier in the middle of their bodies, so both are live
at once, and each reads its variables every way a task or its libraries do.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

import engine
from engine.sdk import Secret

SECRETS = {"A": "secret-of-a-0123", "B": "secret-of-b-4567"}


def _seen(tag: str, barrier: threading.Barrier) -> dict:
    """What a body of run ``tag`` sees, read while the other run is live too."""
    os.environ["WRITTEN_BY_BODY"] = tag  # a write inside a run stays in the run
    barrier.wait(timeout=30)
    out = {
        "who": os.environ.get("WHO"), "getenv": os.getenv("WHO"), "token": os.environ.get("TOKEN"),
        "file": open(os.environ[f"ISO_KEY_{tag}_FILE"]).read(), "written": os.environ.get("WRITTEN_BY_BODY"),
        "in_copy": dict(os.environ).get("WHO"), "in_iter": "WHO" in list(os.environ),
        "child": subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('WHO'), "
                                 "os.environ.get('TOKEN'), os.environ.get('WRITTEN_BY_BODY'))"],
                                capture_output=True, text=True, timeout=60).stdout.split(),
        "ctx_run": engine.ctx().run_id,
    }
    box = {}
    t = threading.Thread(target=lambda: box.update(who=os.environ.get("WHO"), run=engine.ctx().run_id))
    t.start()
    t.join(timeout=30)
    out["thread"] = box

    async def _task():
        return os.environ.get("WHO")

    out["asyncio"] = asyncio.run(_task())
    barrier.wait(timeout=30)  # neither ends (and restores anything) before both have read
    return out


def _env(tag: str, barrier: threading.Barrier) -> engine.TaskEnvironment:
    env = engine.TaskEnvironment(
        name=f"iso-{tag.lower()}", env_vars={"WHO": tag.lower()},
        secrets=[Secret(key=f"ISO_TOKEN_{tag}", as_env_var="TOKEN"), Secret(key=f"ISO_KEY_{tag}", mount="/etc/iso")],
    )

    @env.task(name=f"body_{tag}")
    def body() -> dict:
        return _seen(tag, barrier)

    return env, body


def test_two_runs_in_threads_see_only_their_own_variables(tmp_path, monkeypatch):
    for tag, value in SECRETS.items():
        monkeypatch.setenv(f"ISO_TOKEN_{tag}", value)
        monkeypatch.setenv(f"ISO_KEY_{tag}", "file-" + value)
    monkeypatch.delenv("WHO", raising=False)
    before = dict(os.environ)
    barrier = threading.Barrier(2)
    session = engine.with_runcontext(state=tmp_path / "state.db")
    results, errors = {}, []

    def go(tag):
        _, body = _env(tag, barrier)
        try:
            results[tag] = session.run(body)
        except BaseException as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=go, args=(t,)) for t in SECRETS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for tag, value in SECRETS.items():
        seen, run = results[tag].outputs, results[tag].run
        who = tag.lower()
        assert seen["who"] == seen["getenv"] == seen["in_copy"] == who
        assert seen["in_iter"]
        assert seen["token"] == value
        assert seen["file"] == "file-" + value
        assert seen["written"] == tag
        assert seen["child"] == [who, value, tag]
        assert seen["thread"] == {"who": who, "run": seen["ctx_run"]}
        assert seen["asyncio"] == who
        assert seen["ctx_run"] == run["run_id"]
    # After both: the process environment is exactly what it was.
    assert dict(os.environ) == before
    assert "WHO" not in os.environ and "WRITTEN_BY_BODY" not in os.environ
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('WHO'))"], capture_output=True,
                         text=True, timeout=60).stdout.strip()
    assert out == "None"


def test_outside_a_run_os_environ_is_the_process_environment(tmp_path, monkeypatch):
    """After a run installed the view, code outside any run still reads and writes the real
    environment, down to the C level (a child started with os.system sees it)."""
    env = engine.TaskEnvironment(name="iso-plain", env_vars={"ISO_PLAIN": "inside"})

    @env.task
    def plain() -> str:
        return os.environ["ISO_PLAIN"]

    assert engine.with_runcontext(state=tmp_path / "state.db").run(plain).outputs == "inside"
    assert "ISO_PLAIN" not in os.environ
    monkeypatch.setenv("ISO_OUTSIDE", "real")
    out = tmp_path / "out"
    assert os.system(f"printenv ISO_OUTSIDE > {out}") == 0
    assert out.read_text().strip() == "real"
    monkeypatch.delenv("ISO_OUTSIDE")
    assert os.system("printenv ISO_OUTSIDE >/dev/null") != 0


def test_a_nested_run_sees_its_callers_variables_and_adds_its_own(tmp_path):
    inner_env = engine.TaskEnvironment(name="iso-inner", env_vars={"INNER": "i"})
    outer_env = engine.TaskEnvironment(name="iso-outer", env_vars={"OUTER": "o"})

    @inner_env.task
    def inner() -> tuple:
        return os.environ.get("OUTER"), os.environ.get("INNER")

    @outer_env.task
    def outer() -> tuple:
        got = inner()
        return (*got, os.environ.get("INNER"))

    result = engine.with_runcontext(state=tmp_path / "state.db").run(outer).outputs
    assert tuple(result) == ("o", "i", None)


@pytest.mark.parametrize("op", ["del", "pop"])
def test_removing_a_variable_inside_a_run_leaves_the_process_alone(tmp_path, monkeypatch, op):
    monkeypatch.setenv("ISO_KEEP", "kept")
    env = engine.TaskEnvironment(name=f"iso-remove-{op}")

    @env.task
    def remove() -> bool:
        if op == "del":
            del os.environ["ISO_KEEP"]
        else:
            os.environ.pop("ISO_KEEP")
        return "ISO_KEEP" in os.environ

    assert engine.with_runcontext(state=tmp_path / "state.db").run(remove).outputs is False
    assert os.environ["ISO_KEEP"] == "kept"
