"""A user's own provider and plugin, written against ``engine.extend`` only, for the state tests.

``Thing`` keeps each live object as a JSON file in ``$STORE_DIR/objects`` (so a test can see what
really exists, independently of the state) and appends every call it gets to
``$STORE_DIR/calls.log``. It can die like ``kill -9`` at chosen points of its own calls
(``STORE_KILL=op:before|after[:id-substring]``, comma-separated), which works with any engine,
old or new: the engine's own fault points (``TASKRIG_FAULT_KILL``) are used beside it.

What is declared comes from ``$STORE_SPEC`` (JSON), read at declare time, so that one test can
change the declaration between two commands on the same stack. Run the CLI with this module
imported (the provider must be registered for ``refresh``/``destroy`` too):
``python -c "import state_store; from engine.cli import main; main()" ARGS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import engine
import engine.extend as extend
from engine.extend import NotFound, Options, Owned, Provider, ProviderRegistry, Read, TaskPlugin, TaskPluginRegistry


def _dir() -> Path:
    d = Path(os.environ["STORE_DIR"]) / "objects"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log(op: str, id: str) -> None:
    with open(_dir().parent / "calls.log", "a") as f:
        f.write(f"{op} {id}\n")
        f.flush()
        os.fsync(f.fileno())


def _maybe_die(op: str, point: str, id: str) -> None:
    for item in filter(None, os.environ.get("STORE_KILL", "").split(",")):
        parts = item.split(":", 2)
        if parts[0] == op and parts[1] == point and (len(parts) < 3 or parts[2] in id):
            os.kill(os.getpid(), signal.SIGKILL)


class Thing(Provider):
    """A replace of ``zone`` is create-before-delete (suffixed name), any other change is in place."""

    type_token = "test:store:Thing"
    replace_keys = ("zone",)

    def _path(self, id: str) -> Path:
        return _dir() / f"{id}.json"

    def create(self, urn, inputs, key):
        _log("create", key)
        _maybe_die("create", "before", key)
        path = self._path(key)
        if path.exists():
            _log("duplicate-create", key)
            raise RuntimeError(f"{key} exists already: a create issued twice")
        for other in _dir().glob("*.json"):
            if self.delete_before_replace and json.loads(other.read_text())["urn"] == urn:
                raise AssertionError(f"two copies of {urn} at once: {other.stem} is still live while creating {key}")
        wait = float(os.environ.get("STORE_CREATE_SECONDS", "0"))
        if os.environ.get("STORE_HONOUR_DEADLINE"):
            # Waits "for readiness" before making anything, and stops at the engine's deadline.
            deadline = getattr(extend, "call_deadline", lambda: None)()
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{key}: not ready by the engine's deadline; nothing was made")
                time.sleep(0.02)
        labels = inputs.get("owner_run")
        path.write_text(json.dumps({"urn": urn, "stack": urn.split("::")[0].rsplit(":", 1)[-1], "run": labels,
                                    "inputs": inputs}))
        if not os.environ.get("STORE_HONOUR_DEADLINE"):
            time.sleep(wait)  # made at once, then "waits for readiness", ignoring any deadline
        _maybe_die("create", "after", key)
        return key, {"made": key}

    def read(self, id, inputs, outputs):
        path = self._path(id)
        if not path.exists():
            return None
        inputs = json.loads(path.read_text())["inputs"]
        if os.environ.get("STORE_READ") == "plain":  # a provider that cannot tell its inputs
            return {"made": id, "size": inputs.get("size")}
        return Read(inputs, {"made": id, "size": inputs.get("size")})

    def update(self, id, old_inputs, new_inputs, outputs=None):
        _log("update", id)
        _maybe_die("update", "before", id)
        obj = json.loads(self._path(id).read_text())
        obj["inputs"] = new_inputs
        self._path(id).write_text(json.dumps(obj))
        _maybe_die("update", "after", id)
        return {"made": id, "size": new_inputs.get("size")}

    def delete(self, id, inputs, outputs):
        _log("delete", id)
        _maybe_die("delete", "before", id)
        if id in os.environ.get("STORE_FAIL_DELETE", "").split(","):
            raise RuntimeError(f"{id}: delete refused (STORE_FAIL_DELETE)")
        path = self._path(id)
        if not path.exists():
            raise NotFound(id)
        path.unlink()
        _maybe_die("delete", "after", id)

    def owned(self, stack):
        out = []
        for p in _dir().glob("*.json"):
            obj = json.loads(p.read_text())
            if obj["stack"] == stack:
                out.append(Owned(p.stem, obj.get("run")))
        return out


class Solo(Thing):
    """A thing that cannot exist twice (one name, one port): the provider says delete first."""

    type_token = "test:store:Solo"
    delete_before_replace = True


ProviderRegistry.register(Thing)
ProviderRegistry.register(Solo)


@dataclasses.dataclass
class StoreConfig:
    spec_var: str = "STORE_SPEC"


class StorePlugin(TaskPlugin):
    """Declares what ``$STORE_SPEC`` lists: ``[{"name", "inputs", "type": "thing"|"solo", "deps",
    "options", "reusable" (default true), "idle_ttl", "label_run"}]``."""

    def declare(self, config, ctx):
        out = []
        for item in json.loads(os.environ.get(config.spec_var) or "[]"):
            token = Solo.type_token if item.get("type") == "solo" else Thing.type_token
            inputs = dict(item.get("inputs") or {})
            opts = dict(item.get("options") or {})
            if item.get("label_run"):
                # Like a Kubernetes run label: on the object, never a reason for a diff.
                inputs["owner_run"] = ctx.run_id
                opts["ignore_changes"] = ["owner_run"]
            d = ctx.declaration(token, item["name"], inputs,
                                deps=[extend.make_urn(ctx.stack, Solo.type_token if dep.startswith("solo")
                                                      else Thing.type_token, dep) for dep in item.get("deps", [])],
                                options=Options.from_dict(opts), ephemeral=not item.get("reusable", True))
            if item.get("idle_ttl") is not None:
                d = dataclasses.replace(d, idle_ttl=item["idle_ttl"])
            out.append(d)
        return out


TaskPluginRegistry.register(StoreConfig, StorePlugin())

env = engine.TaskEnvironment(name="store", plugin_config=StoreConfig())
legacy = engine.TaskEnvironment(name="legacy", plugin_config=StoreConfig())


@env.task
def store_task() -> str:
    return "ok"


@legacy.task
def legacy_task() -> str:
    return "ok"
