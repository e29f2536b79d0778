"""The W&B plugin: a ``WandB`` config (as ``plugin_config``, in a list beside another plugin's,
or through ``@wandb_init`` over ``@env.task``) makes a W&B run a resource of every run.

``declare`` asks for a ``wandb:index:Run`` whose id is the engine's run id, and names the API
key's secret by reference; ``running`` sees how the run ends and leaves the exit status for
the teardown's ``delete``; ``attach`` hands the task the live run (``get_wandb_run()``) and
offers launchers the per-rank hook (``engine.ctx().data["per_rank"]``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable

import engine
from engine import Task
from engine.extend import Attachment, ConfigError, DeclareContext, TaskPlugin, TaskPluginRegistry

from . import run as run_provider
from . import runtime
from .config import API_KEY, WandB

RESOURCE = "run"


def _api_key_ref(config: WandB, env) -> Any:
    """The Secret that holds the API key: the config's, else the environment's ``wandb_api_key``."""
    if config.api_key is not None:
        return config.api_key
    return next((s for s in getattr(env, "secrets", []) if s.key == API_KEY), None)


def run_spec(config: WandB, ctx: DeclareContext) -> dict:
    """The resource's inputs: what ``wandb.init`` gets, minus the key (a reference only)."""
    ref = _api_key_ref(config, ctx.env)
    mode = config.mode or ("online" if ref is not None else "offline")
    if mode == "online" and ref is None:
        raise ConfigError(f"mode 'online' needs an API key: add engine.Secret(key={API_KEY!r}) to the "
                          f"environment's secrets (or pass api_key=engine.Secret(...))", "plugin_config.mode")
    return {
        "id": ctx.run_id, "project": config.project or ctx.stack, "entity": config.entity, "mode": mode,
        "name": config.name or ctx.task_name or ctx.stack, "group": config.group, "job_type": config.job_type,
        "notes": config.notes, "tags": list(config.tags), "config": dict(config.config),
        "dir": os.path.abspath(config.dir or os.environ.get("WANDB_DIR") or os.getcwd()),
        "run_mode": config.run_mode, "rank_scope": config.rank_scope,
        "api_key_secret": ref.ref if ref is not None else None,
    }


class WandBPlugin(TaskPlugin):
    def declare(self, config: WandB, ctx: DeclareContext):
        ref = _api_key_ref(config, ctx.env)
        d = ctx.declaration(run_provider.TYPE_TOKEN, RESOURCE, run_spec(config, ctx), ephemeral=True)
        if ref is not None:
            d.secret_inputs = {"api_key": ref}  # the engine resolves it; the value stays out of the state
        return [d]

    @contextlib.contextmanager
    def running(self, config: WandB, ctx: DeclareContext):
        # W&B reads the exit code as the run's outcome: 0 finished, anything else failed.
        try:
            yield
        except KeyboardInterrupt:
            run_provider.set_exit_status(ctx.run_id, 130)
            raise
        except BaseException:
            run_provider.set_exit_status(ctx.run_id, 1)
            raise
        run_provider.set_exit_status(ctx.run_id, 0)

    def attach(self, config: WandB, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
        out = outputs[RESOURCE]
        run = run_provider.live_run(out["id"])
        ref = _api_key_ref(config, ctx.env)
        # Ranks read the key from the variable the environment's secret sets in the task.
        env_secret = next((s for s in getattr(ctx.env, "secrets", []) if ref is not None and s.key == ref.key
                           and s.group == ref.group), None)
        hook = runtime.RankInit(run_spec(config, ctx), env_secret.env_var if env_secret is not None else None)
        return Attachment(data={"wandb_run": run, "wandb_run_id": out["id"], "wandb_run_dir": out["run_dir"]},
                          contexts=[lambda: _offer_rank_hook(hook)])


@contextlib.contextmanager
def _offer_rank_hook(hook):
    """Launchers that run the body in other processes (torch elastic) enter every hook of
    ``data["per_rank"]`` around the body on each rank. A list, appended to, so that several
    plugins can each offer one."""
    engine.ctx().data.setdefault("per_rank", []).append(hook)
    yield


def get_wandb_run():
    """The current task's W&B run; None outside one, or on a rank that does not log."""
    tc = engine.ctx()
    if tc is not None and "wandb_run" in tc.data:
        return tc.data["wandb_run"]
    return runtime.current_run()


def wandb_init(_task: Task | Callable | None = None, **settings: Any):
    """Flyte 2's decorator, outermost over ``@env.task``: the task gets a W&B run as a resource
    of each of its runs (``settings`` are ``WandB``'s fields). Over a plain function (a
    ``wandb.agent`` sweep callback) it runs each call inside a W&B run, engine-free."""
    config = WandB(**settings)

    def wrap(target):
        if isinstance(target, Task):
            return target.with_plugin_config(config)
        if callable(target):
            return _plain(target, config)
        raise TypeError(f"@wandb_init decorates an @env.task or a function, not {type(target).__name__}")

    return wrap(_task) if _task is not None else wrap


def _plain(fn: Callable, config: WandB) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        import wandb

        mode = config.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        run = wandb.init(project=config.project, entity=config.entity, mode=mode, tags=list(config.tags),
                         config=dict(config.config), name=config.name, group=config.group, job_type=config.job_type,
                         notes=config.notes, dir=config.dir, reinit="create_new")
        runtime._current.append(run)
        code = 1
        try:
            result = fn(*args, **kwargs)
            code = 0
            return result
        finally:
            runtime._current.remove(run)
            runtime.finish_run(run, code)

    return call


TaskPluginRegistry.register(WandB, WandBPlugin())
