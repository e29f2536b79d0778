"""The real CLI with the user's test provider (``tasks/state_store.py``) imported, and a view of
what that provider really has live, independently of the state: shared by the regression tests
(``test_state_bugs.py``) and the fault-injection table (``test_faults.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TASKS

TARGET = "state_store:store_task"
CLI = "import state_store; from engine.cli import main; main()"


class Store:
    """The real CLI with the test provider imported, and a view of the provider's live objects."""

    def __init__(self, engine, tmp_path: Path):
        self.engine = engine
        self.dir = tmp_path / "store"
        self.env = {**engine.env, "STORE_DIR": str(self.dir),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(TASKS), engine.env.get("PYTHONPATH")]))}

    def __call__(self, *args: str, spec: list | None = None, timeout: float = 120, **env: str):
        e = {**self.env, **{k: str(v) for k, v in env.items()}}
        if spec is not None:
            e["STORE_SPEC"] = json.dumps(spec)
        return subprocess.run([sys.executable, "-c", CLI, *args], cwd=self.engine.cwd, capture_output=True,
                              text=True, timeout=timeout, env=e)

    def up(self, spec, **env):
        return self("up", TARGET, spec=spec, **env)

    def json(self, *args, spec=None, **env):
        r = self(*args, "--json", spec=spec, **env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def ops(self, spec, **env) -> dict[str, str]:
        """The preview's op per resource name."""
        return {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in self.json("preview", TARGET, spec=spec, **env)["steps"]}

    def live(self) -> dict[str, dict]:
        folder = self.dir / "objects"
        return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.exists() else {}

    def recorded(self) -> list[dict]:
        return self.json("state", "list")

    def show(self, name: str) -> dict:
        return self.json("state", "show", f"urn:engine:store::test:store:Thing::{name}")

    def calls(self) -> list[str]:
        log = self.dir / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def assert_truthful(self) -> None:
        live = sorted(self.live())
        ids = sorted(r["id"] for r in self.recorded())
        assert ids == live, f"recorded {ids}, live {live}"
        assert self.engine.journal_open() == [], self.engine.journal_open()
        assert not [c for c in self.calls() if c.startswith("duplicate-create")], self.calls()
