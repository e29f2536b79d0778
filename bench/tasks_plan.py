"""bench_plan's synthetic provider, plugin and task, importable as an ``engine`` TARGET.

``engine preview bench/tasks_plan.py:noop`` declares ``$BENCH_PLAN_N`` (default 10,000)
reusable resources of ``bench:synthetic:Item``, a provider whose create and delete do nothing
outside the state: what the CLI pays to plan and apply that many is the engine's own cost.
The declarations are built as a plugin builds them, through ``DeclareContext.declaration``,
each with inputs of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import engine
from engine.extend import DeclareContext, Provider, ProviderRegistry, TaskPlugin, TaskPluginRegistry

TYPE = "bench:synthetic:Item"
STACK = "bench_plan"


class SyntheticItem(Provider):
    """A resource that is only a row: create and delete do nothing outside the state."""

    type_token = TYPE

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        return idempotency_key, {"name": idempotency_key, "index": inputs["index"]}

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        return None


@dataclass
class Synthetic:
    count: int = 10_000


class SyntheticPlugin(TaskPlugin):
    def declare(self, config: Synthetic, ctx: DeclareContext):
        return [ctx.declaration(TYPE, f"item{i:05d}", {"index": i, "size": "small", "labels": {"bench": "plan"}},
                                ephemeral=False)
                for i in range(config.count)]


ProviderRegistry.register(SyntheticItem, override=True)
TaskPluginRegistry.register(Synthetic, SyntheticPlugin(), override=True)


def make_task(n: int):
    env = engine.TaskEnvironment(name=STACK, plugin_config=Synthetic(count=n))

    @env.task
    def noop() -> int:
        return 0

    return noop


noop = make_task(int(os.environ.get("BENCH_PLAN_N", "10000")))
