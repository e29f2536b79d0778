"""Tasks for the PostgreSQL state tests: four stacks of a trivial task that each declare one
ephemeral ``Thing`` (a file per live object, from ``state_store``), so that every run writes a
create and a delete intent; and a stack mixing a thing any machine reaches with a host-local one.

Run the CLI with this module imported (``python -c "import pg_tasks; from engine.cli import
main; main()" ...``, ``tests/tasks`` on PYTHONPATH): refresh, destroy and the reaper need the
providers registered."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: E402
from engine.extend import ProviderRegistry, TaskPlugin, TaskPluginRegistry  # noqa: E402
from state_store import StoreConfig, Thing  # noqa: E402


class LocalThing(Thing):
    """A Thing that, like a local process, exists only on the host that made it."""

    type_token = "test:store:LocalThing"
    host_local = True


ProviderRegistry.register(LocalThing)


@dataclasses.dataclass
class Mixed:
    """One thing any machine reaches and one local to the host that made it."""


class MixedPlugin(TaskPlugin):
    def declare(self, config, ctx):
        return [ctx.declaration(Thing.type_token, "remote", {"size": 1}, ephemeral=True),
                ctx.declaration(LocalThing.type_token, "local", {"size": 1}, ephemeral=True)]


TaskPluginRegistry.register(Mixed, MixedPlugin())


def hold(seconds: float = 0.0, marker: str | None = None) -> str:
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return engine.ctx().stack


envs = [engine.TaskEnvironment(name=f"pgc_{i}", plugin_config=StoreConfig()) for i in range(4)]
hold_0, hold_1, hold_2, hold_3 = (env.task(hold) for env in envs)

mixed_env = engine.TaskEnvironment(name="pg_mixed", plugin_config=Mixed())


@mixed_env.task
def mixed(seconds: float = 0.0, marker: str | None = None) -> str:
    return hold(seconds, marker)


plain_env = engine.TaskEnvironment(name="pg_plain")


@plain_env.task
def leak(text: str) -> str:
    raise RuntimeError(f"cannot reach {text}")
