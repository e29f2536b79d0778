"""What a pipeline relies on (issue 9): ``--json`` prints exactly one JSON document on stdout,
whatever the task prints; ``preview --detailed-exitcode`` is Terraform's 0/2/1; the plan
document carries a ``format_version``.

Before: the task's stdout came before the document, and bad input exited 2, which under
``--detailed-exitcode`` means "changes".
"""

from __future__ import annotations

import json
import textwrap

import pytest

from engine.render import PLAN_FORMAT_VERSION
from faults.store import TARGET, Store

NOISY = textwrap.dedent('''
    import os, subprocess, sys
    import engine

    env = engine.TaskEnvironment(name="noisy")

    @env.task
    def noisy(fail: bool = False) -> dict:
        print("from print")
        sys.stdout.write("from sys.stdout\\n")
        sys.stdout.flush()
        os.write(1, b"from fd 1\\n")
        subprocess.run(["echo", "from a child"], check=True)
        if fail:
            raise RuntimeError("the task failed")
        return {"answer": 42}
''')


@pytest.fixture
def noisy(engine):
    (engine.cwd / "noisy.py").write_text(NOISY)
    return "noisy.py:noisy"


@pytest.mark.parametrize("fail", [False, True])
def test_up_json_is_one_document_and_the_tasks_output_goes_to_stderr(engine, noisy, fail):
    r = engine("up", noisy, "--json", *(["-i", "fail=true"] if fail else []))
    assert r.returncode == (1 if fail else 0), r.stderr
    doc = json.loads(r.stdout)  # the whole of stdout: one document, nothing before or after
    assert doc["format_version"] == PLAN_FORMAT_VERSION
    assert doc["status"] == ("failed" if fail else "succeeded")
    if fail:
        assert "the task failed" in doc["error"]
    else:
        assert doc["outputs"] == {"answer": 42}
    for line in ("from print", "from sys.stdout", "from fd 1", "from a child"):
        assert line in r.stderr
        assert line not in r.stdout


def test_every_json_command_prints_only_its_document(engine, noisy):
    assert engine("up", noisy).returncode == 0
    for args in (("preview", noisy), ("state", "list"), ("runs",), ("destroy", "noisy"), ("refresh", "noisy")):
        r = engine(*args, "--json")
        assert r.returncode == 0, (args, r.stderr)
        json.loads(r.stdout)
    doc = json.loads(engine("preview", noisy, "--json").stdout)
    assert doc["format_version"] == PLAN_FORMAT_VERSION


@pytest.fixture
def store(engine, tmp_path):
    return Store(engine, tmp_path)


def test_detailed_exitcode_is_0_no_changes_2_changes_1_any_error(store, engine, tmp_path):
    spec = [{"name": "a", "inputs": {"size": 1}}]

    def code(*args, spec=spec, **env):
        return store("preview", *args, "--detailed-exitcode", spec=spec, **env).returncode

    assert code(TARGET) == 2  # nothing recorded yet: all to create
    assert store.up(spec).returncode == 0
    assert code(TARGET) == 0
    assert code(TARGET, "--json") == 0
    assert code(TARGET, spec=[{"name": "a", "inputs": {"size": 2}}]) == 2
    # Bad input of every kind is an error (1), never "changes" (2).
    (tmp_path / "broken.py").write_text("this is not python\n")
    assert code("no_such_module:task") == 1
    assert code(f"{tmp_path / 'broken.py'}:t") == 1
    assert code(TARGET, "-i", "nope=1") == 1
    assert code(TARGET, "--no-such-option") == 1
    assert code(TARGET, spec=[{"name": "a", "inputs": {"size": 1}}, {"name": "a", "inputs": {}}]) == 1  # one URN twice
    (tmp_path / "foreign.db").write_text("not a state file")
    assert code(TARGET, ENGINE_STATE=str(tmp_path / "foreign.db")) == 1
    # Without the flag the usual codes stand: bad input is 2.
    assert store("preview", "no_such_module:task").returncode == 2
