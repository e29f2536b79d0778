"""The real CLI with the user's test provider (``tasks/state_store.py``) imported, and a view of
what that provider really has live, independently of the state: shared by the regression tests
(``test_state_bugs.py``) and the fault-injection table (``test_faults.py``).

Every command that acts (``up``, ``refresh``, ``destroy``) is a process of its own, started as a
user starts it, so that a kill is a real SIGKILL of a real engine. A command that only looks
(``state list``, ``state show``, ``preview``, ``runs``, each ``--json``) can instead run in this
process (``Store(..., reads_in_process=True)``): the CLI's own click command, with the same
arguments, environment and working directory, so the same code reads the state read-only, without
an interpreter start and imports per read (most of a fault case's time). ``assert_cli_agrees``
checks that both give the same documents.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

from conftest import TASKS

TARGET = "state_store:store_task"
CLI = "import state_store; from engine.cli import main; main()"


def _provider_imported() -> None:
    """``state_store`` in this process, as the CLI's ``import state_store`` has it (its providers
    and plugin registered): under that name, from its file, without putting all of ``tasks/``
    on ``sys.path``."""
    if "state_store" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("state_store", TASKS / "state_store.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["state_store"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["state_store"]
        raise


class Store:
    """The real CLI with the test provider imported, and a view of the provider's live objects."""

    def __init__(self, engine, tmp_path: Path, reads_in_process: bool = False):
        self.engine = engine
        self.dir = tmp_path / "store"
        self.env = {**engine.env, "STORE_DIR": str(self.dir),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(TASKS), engine.env.get("PYTHONPATH")]))}
        self.reads_in_process = reads_in_process

    def _env(self, spec: list | None, env: dict) -> dict[str, str]:
        """A command's whole environment: the store's, the call's variables, the declaration."""
        e = {**self.env, **{k: str(v) for k, v in env.items()}}
        if spec is not None:
            e["STORE_SPEC"] = json.dumps(spec)
        return e

    def __call__(self, *args: str, spec: list | None = None, timeout: float = 120, **env: str):
        return subprocess.run([sys.executable, "-c", CLI, *args], cwd=self.engine.cwd, capture_output=True,
                              text=True, timeout=timeout, env=self._env(spec, env))

    def up(self, spec, **env):
        return self("up", TARGET, spec=spec, **env)

    def json(self, *args, spec=None, **env):
        """``ARGS --json`` by the CLI in a process of its own."""
        r = self(*args, "--json", spec=spec, **env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def look(self, *args, spec=None, **env):
        """``ARGS --json`` of a command that only looks, by the CLI's click command in this
        process: the environment is exactly the one ``json`` gives its process (variables this
        process has and that one would not are unset for the call), in the same folder."""
        from click.testing import CliRunner

        from engine.cli import cli

        _provider_imported()
        want = self._env(spec, env)
        delta: dict[str, str | None] = {k: v for k, v in want.items() if os.environ.get(k) != v}
        delta.update({k: None for k in os.environ if k not in want})
        with contextlib.chdir(self.engine.cwd):
            r = CliRunner().invoke(cli, [*args, "--json"], env=delta)
        assert r.exit_code == 0, (r.exit_code, r.stderr, "".join(traceback.format_exception(*r.exc_info))
                                  if r.exc_info and not isinstance(r.exception, SystemExit) else None)
        return json.loads(r.stdout)

    def close(self) -> None:
        """Closes what the in-process reads left open. The CLI's ``state list``, ``state show`` and
        ``runs`` leave their read-only connection to the end of their process, and an unclosed
        sqlite3 connection is in a cycle with its statement cache, which only a full collection
        frees: without one, each case would leave its connections open to the end of the session."""
        if self.reads_in_process:
            gc.collect()

    def read(self, *args, spec=None, **env):
        """A look at the state: in this process or by the CLI's process, as the store was made."""
        return (self.look if self.reads_in_process else self.json)(*args, spec=spec, **env)

    def ops(self, spec, **env) -> dict[str, str]:
        """The preview's op per resource name."""
        return {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in self.read("preview", TARGET, spec=spec, **env)["steps"]}

    def live(self) -> dict[str, dict]:
        folder = self.dir / "objects"
        return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.exists() else {}

    def recorded(self) -> list[dict]:
        return self.read("state", "list")

    def show(self, name: str) -> dict:
        return self.read("state", "show", f"urn:engine:store::test:store:Thing::{name}")

    def runs(self) -> list[dict]:
        return self.read("runs")

    def calls(self) -> list[str]:
        log = self.dir / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def assert_truthful(self) -> None:
        live = sorted(self.live())
        ids = sorted(r["id"] for r in self.recorded())
        assert ids == live, f"recorded {ids}, live {live}"
        assert self.engine.journal_open() == [], self.engine.journal_open()
        assert not [c for c in self.calls() if c.startswith("duplicate-create")], self.calls()

    def assert_cli_agrees(self, spec: list) -> None:
        """Every read the tests make in this process (``state list``, ``state show`` of each
        recorded URN, ``preview`` of ``spec``, ``runs``) gives the document the CLI's own process
        prints. A preview's plan is made afresh each time, under no run id: compared whole."""
        listed = self.json("state", "list")
        assert self.look("state", "list") == listed
        for urn in dict.fromkeys(r["urn"] for r in listed):
            assert self.look("state", "show", urn) == self.json("state", "show", urn), urn
        assert self.look("preview", TARGET, spec=spec) == self.json("preview", TARGET, spec=spec)
        assert self.look("runs") == self.json("runs")
