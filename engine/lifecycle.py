"""One task run from start to end: declare, check, lock, recover, plan, apply, attach, run,
tear down, record. ``Session`` is the entry point of every operation on a stack; the
stack-wide ones are modules of their own, each a few functions taking the session:
``engine.teardown`` (a run's teardown, destroy, the idle-TTL reaper), ``engine.refresh``
(reading resources back), ``engine.program_runs`` (Pulumi programs).

Validation (target, plugin config, provider ``check``, secrets) happens before the state file
is opened, so bad input leaves it byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from typing import Any, NamedTuple

from . import context, gcpause, program_runs, runenv
from .apply import Applier
from .errors import ConfigError, HostLocal
from .lock import PgStackLock, StackLock
from .pgstate import PgTarget
from .plan import Plan, plan as make_plan
from .plugin import Attachment, DeclareContext
from .recover import expired, foreign_host, recover_stack
from .refresh import refresh_one, refresh_stack
from .registry import ProviderRegistry, TaskPluginRegistry
from .report import Reporter
from .sdk import Secret
from .secrets import (error_text, register, remove_secret_files, resolve_secret, resolve_secrets,
                      write_secret_files)
from .resource import NO_DIFF, Declaration, Diff, Provider, ProviderContext, Record
from .runs import new_run_id
from .state import State, locate, runtime_dir
from .teardown import destroy_stack, reap_idle, teardown_run


# NO_DIFF of a provider that replaces delete-first (a type change still replaces): one instance.
_NO_DIFF_DELETE_FIRST = Diff(delete_before_replace=True)


class RunResult(NamedTuple):
    outputs: Any
    run: dict


@dataclasses.dataclass
class Prepared:
    """A run's validated declarations, before any state is touched."""

    task: Any
    inputs: dict
    run_id: str
    dctx: DeclareContext
    plugins: list[tuple[Any, Any]]
    decls: list[Declaration]
    secret_env: dict[str, str]
    secret_files: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    # A run inside its caller's stack (a connector call): the caller holds the lock and
    # recovered the stack; this run neither prunes nor reaps what others in it hold.
    nested: bool = False


@dataclasses.dataclass
class _Run:
    outputs: dict
    result: Any = None


class Session:
    """Settings for the runs started from here: state file, backend, lock wait, reporter."""

    def __init__(self, state: str | os.PathLike | None = None, backend: str | None = None,
                 lock_timeout: float = 0.0, reporter: Reporter | None = None, parallelism: int = 8):
        # A file path, or a PostgreSQL target (engine.pgstate.PgTarget) for a postgresql:// URL.
        self.state_path = locate(state)
        self.backend = backend
        if backend is not None and backend not in ("local", "kubernetes"):
            raise ConfigError(f"unknown backend {backend!r} (local, kubernetes)", "backend")
        self.lock_timeout = lock_timeout
        self.reporter = reporter or Reporter()
        self.parallelism = parallelism
        self._providers: dict[str, Any] = {}
        # The state each locked stack is being run with, shared by the runs nested in it
        # (thousands of connector calls of one run need no connection each).
        self._open: dict[str, State] = {}
        import threading

        self._tls = threading.local()

    # ------------------------------------------------------------------ plumbing
    def provider(self, token: str):
        p = self._providers.get(token)
        if p is None:
            cls = ProviderRegistry.find(token)
            if cls is None:
                raise ConfigError(f"no provider is registered for the resource type {token!r} "
                                  f"(is the extra that provides it installed?)", "type")
            runtime = runtime_dir(self.state_path)
            p = self._providers[token] = cls(ProviderContext(str(self.state_path), str(runtime)))
        return p

    def open_state(self) -> State:
        state = State.shared(self.state_path)
        if state.pg is not None:  # the operation's own session: the next lock() of this thread takes it there
            self._tls.state = state
        return state

    def lock(self, stack: str, operation: str, state: State | None = None):
        """The stack's lock. For a PostgreSQL state an advisory lock on the session of ``state``
        (default: the state this thread opened last), so the lock and the writes share a session."""
        if isinstance(self.state_path, PgTarget):
            state = state or getattr(self._tls, "state", None)
            if state is None or state.pg is None or state._broken or state.conn.closed:
                state = self.open_state()
            return PgStackLock(state, stack, operation).acquire(self.lock_timeout, self.reporter.lock_wait)
        return StackLock(self.state_path, stack, operation).acquire(self.lock_timeout, self.reporter.lock_wait)

    def _foreign(self, state: State, rec: Record) -> str | None:
        return foreign_host(state, rec.type, rec.host, self.provider)

    def _refuse_foreign(self, state: State, stack: str, records) -> None:
        theirs = [r for r in records if r is not None and self._foreign(state, r)]
        if theirs:
            raise HostLocal(stack, [(r.urn, r.type, r.id, r.host) for r in theirs])

    def _applier(self, state: State, stack: str, run_id: str, reason: str | None = None) -> Applier:
        return Applier(state, self.provider, stack, run_id, self.parallelism, on_start=self.reporter.step_start,
                       on_done=self.reporter.step_done, reason=reason)

    def recover(self, state: State, stack: str) -> None:
        crashed = recover_stack(state, stack, self.provider, self.reporter.message, self.reporter.step_start,
                                self.reporter.step_done)
        remove_secret_files(crashed)
        gone = expired(state, stack, providers=self.provider)
        if gone:
            reap_idle(self, state, stack, gone)

    # ------------------------------------------------------------------ declaring
    def prepare(self, task, inputs: dict, run_id: str | None = None, stack: str | None = None) -> Prepared:
        env = task.env
        run_id = run_id or new_run_id()
        backend = self.backend or env.backend or "local"
        reusable = env.reusable is not None
        dctx = DeclareContext(stack or env.name, run_id, backend, env, reusable=reusable,
                              idle_ttl=env.reusable.ttl_seconds if reusable else None, task_name=task.name,
                              inputs=inputs, task=task)
        plugins, decls = [], []
        configs = task.plugin_configs
        # The whole stack's declarations are built with the collector paused, as its plan is
        # (engine.gcpause): a plugin declaring 100,000 resources otherwise pays ~0.2 s of walks.
        with gcpause.paused():
            for i, cfg in enumerate(configs):
                plugin = TaskPluginRegistry.find(type(cfg))
                if plugin is None:
                    raise ConfigError(f"no plugin is registered for {type(cfg).__qualname__}",
                                      "plugin_config" + (f"[{i}]" if len(configs) > 1 else ""))
                plugins.append((cfg, plugin))
                decls.extend(plugin.declare(cfg, dctx))
        secret_env, secret_files = resolve_secrets(env)
        values = [*secret_env.values(), *(v for _, v in secret_files.values())]
        for d in decls:
            d.inputs = self.provider(d.type).check(d.inputs)
            # A plugin that needs a secret to provision (W&B's API key) declares the reference;
            # the value joins the provider's calls only, never the state, the journal or a plan.
            d.secret_inputs = {k: resolve_secret(v) if isinstance(v, Secret) else v for k, v in d.secret_inputs.items()}
            values.extend(v for v in d.secret_inputs.values() if isinstance(v, str))
        register(values)  # a plugin's secret input given as a plain value is masked like a resolved one
        return Prepared(task, inputs, run_id, dctx, plugins, decls, secret_env, secret_files, nested=stack is not None)

    def _plan(self, state: State, stack: str, decls: list[Declaration], run_id: str | None,
              refresh: bool = False, prune: bool = True) -> Plan:
        # Without pruning only the declared URNs matter: a run nested in its caller's stack reads
        # those by key, not the whole stack (thousands of sibling jobs may be recorded there).
        # A whole stack is read and planned with the garbage collector paused (engine.gcpause).
        with gcpause.paused() if prune else contextlib.nullcontext():
            recorded = state.resources(stack) if prune else [r for r in map(state.resource, (d.urn for d in decls)) if r]
            # Every recorded type needs its provider (a missing one is the error it is today).
            providers = {t: self.provider(t) for t in dict.fromkeys(r.type for r in recorded)}
            current = recorded
            # Row by row only when a row may be read back or belong to another host (a shared
            # state and a provider of local processes: foreign_host).
            if (refresh or any(p.refresh_on_up for p in providers.values())
                    or (state.pg is not None and any(getattr(p, "host_local", False) for p in providers.values()))):
                wanted = {d.urn for d in decls}
                current = []
                for r in recorded:
                    if self._foreign(state, r):  # another host's local processes: not readable from here
                        current.append(r)
                        continue
                    if refresh or (r.urn in wanted and providers[r.type].refresh_on_up and not r.ephemeral):
                        r = self._refresh_one(state, r, write=refresh)
                        if r is None:
                            continue
                    current.append(r)
            # Equal inputs of a provider that keeps the base ``diff``: the base's own answer (NO_DIFF,
            # delete-first folded in as _diff folds it), without a call per resource.
            unchanged = {t: _NO_DIFF_DELETE_FIRST if p.delete_before_replace else NO_DIFF
                         for t, p in providers.items() if type(p).diff is Provider.diff}
            recorded_by_urn = {r.urn: r for r in current}.get
            diffs = {}
            for d in decls:
                old = recorded_by_urn(d.urn)
                if old is not None and not d.read_only:
                    diff = unchanged.get(d.type) if old.inputs == d.inputs else None
                    diffs[d.urn] = self._diff(old, d) if diff is None else diff
            return make_plan(stack, decls, current, diffs, run_id=run_id, prune=prune)

    def _diff(self, old: Record, d: Declaration) -> Diff:
        """The provider's diff, with its class-wide ``delete_before_replace`` (a local cluster
        cannot run twice under one name) folded in."""
        provider = self.provider(d.type)
        diff = provider.diff(old.inputs, d.inputs)
        if provider.delete_before_replace and not diff.delete_before_replace:
            diff = _NO_DIFF_DELETE_FIRST if diff is NO_DIFF else dataclasses.replace(diff, delete_before_replace=True)
        return diff

    def _refresh_one(self, state: State, r: Record, write: bool) -> Record | None:
        """The plan's (and an image build's) read-back of one record: ``engine.refresh``."""
        return refresh_one(self, state, r, write)

    # ------------------------------------------------------------------ the operations
    def preview(self, task, inputs: dict | None = None) -> Plan:
        prep = self.prepare(task, inputs or {})
        if not self.state_path.exists():
            return make_plan(task.env.name, prep.decls, [], {}, run_id=prep.run_id)
        state = State.reader(self.state_path)  # lock-free and read-only: an `up` may be running
        try:
            return self._plan(state, task.env.name, prep.decls, prep.run_id)
        finally:
            state.close()

    def run(self, task, *args: Any, **kwargs: Any) -> RunResult:
        return self.execute(task, task.bind(*args, **kwargs))

    def execute(self, task, inputs: dict, parent: context.TaskContext | None = None) -> RunResult:
        if parent is not None and getattr(task, "runs_in_caller_stack", False) and parent.stack in self._open:
            prep = self.prepare(task, inputs, stack=parent.stack)
            return self._execute(self._open[parent.stack], prep, parent)
        prep = self.prepare(task, inputs)
        stack = prep.dctx.stack
        state = self.open_state()
        try:
            with self.lock(stack, f"up {task.name}", state):
                self.recover(state, stack)
                self._open[stack] = state
                try:
                    return self._execute(state, prep, parent)
                finally:
                    self._open.pop(stack, None)
        finally:
            state.close()

    async def execute_async(self, task, inputs: dict, parent: context.TaskContext) -> RunResult:
        """A call awaited inside a run, in the caller's stack: the body (a connector job's
        polling) runs on the caller's event loop, so one process polls thousands of jobs with no
        thread each; the short state and provider steps around it run in worker threads."""
        import asyncio

        prep = self.prepare(task, inputs, stack=parent.stack)
        state = self._open[parent.stack]
        bracket = self._running(state, prep, parent)
        run = await asyncio.to_thread(bracket.__enter__)
        try:
            token = context.enter(self._task_context(prep, run.outputs))
            try:
                run.result = await task.execute(**prep.inputs)
            finally:
                context.leave(token)
        except BaseException as e:
            if not await asyncio.to_thread(bracket.__exit__, type(e), e, e.__traceback__):
                raise
        else:
            await asyncio.to_thread(bracket.__exit__, None, None, None)
        return RunResult(run.result, state.run(prep.run_id))

    def _execute(self, state: State, prep: Prepared, parent) -> RunResult:
        with self._running(state, prep, parent) as run:
            run.result = self._run_body(prep, run.outputs, parent)
        return RunResult(run.result, state.run(prep.run_id))

    @contextlib.contextmanager
    def _running(self, state: State, prep: Prepared, parent):
        """A run around its body: record it, provision, yield the resources' outputs; however the
        body ends, tear down and record how. (A context manager, so that an async body can be
        bracketed by it too.)"""
        import asyncio

        task, run_id, stack = prep.task, prep.run_id, prep.dctx.stack
        state.start_run(run_id, stack, task.name, prep.inputs, parent.run_id if parent else None)
        status, error, run = "failed", None, _Run({})
        t0 = time.monotonic()
        try:
            with contextlib.ExitStack() as around:
                for cfg, plugin in prep.plugins:
                    around.enter_context(plugin.running(cfg, prep.dctx))
                plan = self._plan(state, stack, prep.decls, run_id, prune=not prep.nested)
                self._refuse_foreign(state, stack, [s.old for s in plan.steps])
                self.reporter.plan(plan, "up")
                results = self._applier(state, stack, run_id).apply(plan)
                state.update_run(run_id, status="running")
                run.outputs = {d.name: results[d.urn].outputs for d in prep.decls if d.urn in results}
                yield run
                status = "succeeded"
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted (Ctrl-C)"
            raise
        except asyncio.CancelledError:
            status, error = "interrupted", "cancelled"
            raise
        except BaseException as e:
            error = error_text(e)
            raise
        finally:
            # A second Ctrl-C while this runs leaves the run 'tearing_down' with open intents;
            # the next command on the stack recovers them.
            state.update_run(run_id, status="tearing_down")
            try:
                teardown_run(self, state, stack, run_id, nested=prep.nested, urns=[d.urn for d in prep.decls])
            except BaseException as e:
                # Left 'tearing_down' on purpose: the next command on the stack finishes it.
                error = f"{error + '; ' if error else ''}teardown failed: {error_text(e)}"
                state.update_run(run_id, error=error)
                raise
            state.update_run(run_id, status=status, finished=time.time(), error=error,
                             outputs=run.result if status == "succeeded" else None)
            self.reporter.task_done(task.name, run_id, time.monotonic() - t0, None if status == "succeeded" else error)

    def _task_context(self, prep: Prepared, outputs: dict[str, dict],
                      attachments: list[Attachment] | None = None) -> context.TaskContext:
        task, dctx = prep.task, prep.dctx
        tc = context.TaskContext(run_id=prep.run_id, stack=dctx.stack, task=task.name, env=task.env,
                                 session=self, outputs=outputs, fn=task.fn, inputs=prep.inputs)
        if attachments is None:
            attachments = [plugin.attach(cfg, outputs, dctx) for cfg, plugin in prep.plugins]
        for a in attachments:
            tc.data.update(a.data)
        return tc

    def _run_body(self, prep: Prepared, outputs: dict[str, dict], parent) -> Any:
        task, dctx = prep.task, prep.dctx
        env_vars = {**task.env.env_vars, **prep.secret_env}
        attachments: list[Attachment] = [plugin.attach(cfg, outputs, dctx) for cfg, plugin in prep.plugins]
        tc = self._task_context(prep, outputs, attachments)
        for a in attachments:
            env_vars.update(a.env_vars)
        mount_dir = None
        if prep.secret_files:
            mount_dir, paths = write_secret_files(prep.run_id, prep.secret_files)
            env_vars.update(paths)
        token = context.enter(tc)
        self.reporter.task_start(task.name, prep.run_id)
        try:
            # The run's variables in its own view of os.environ, never the process's (runenv).
            with runenv.scoped(env_vars), contextlib.ExitStack() as stack:
                for a in attachments:
                    for cm in a.contexts:
                        stack.enter_context(cm())
                remote = [a.remote for a in attachments if a.remote is not None]
                if len(remote) > 1:
                    raise ConfigError(f"{len(remote)} plugins of {task.name} each run its body elsewhere: "
                                      f"only one may", "plugin_config")
                call = remote[0] if remote else (lambda: task.call_body(prep.inputs))  # noqa: E731
                for cfg, plugin in reversed(prep.plugins):
                    call = (lambda c=call, p=plugin, g=cfg: p.execute(g, c, dctx))
                return call()
        finally:
            context.leave(token)
            if mount_dir is not None:
                shutil.rmtree(mount_dir, ignore_errors=True)

    # ------------------------------------------------------------------ stack-wide operations
    def program_declarations(self, target: str, stack: str | None = None):
        return program_runs.program_declarations(self, target, stack)

    def preview_program(self, target: str, stack: str | None = None) -> Plan:
        return program_runs.preview_program(self, target, stack)

    def up_program(self, target: str, stack: str | None = None) -> tuple[Plan, dict]:
        """Plan and apply a Pulumi program's resources; they persist (no teardown)."""
        return program_runs.up_program(self, target, stack)

    def destroy(self, stack: str) -> Plan:
        return destroy_stack(self, stack)

    def refresh(self, stack: str) -> list[Record]:
        return refresh_stack(self, stack)


_default_session: Session | None = None


def with_runcontext(**settings: Any) -> Session:
    """``engine.with_runcontext(state=..., backend=...).run(task, **inputs)``, as in Flyte 2."""
    return Session(**settings)


def run(task, *args: Any, **kwargs: Any) -> RunResult:
    """Run a task with its environment's resources; returns (outputs, run record)."""
    return Session().run(task, *args, **kwargs)


def preview(task, **inputs: Any) -> Plan:
    return Session().preview(task, inputs)


def call_task(task, inputs: dict) -> Any:
    """A task called like a function: inside a run of the same environment it reuses that
    run's resources; anywhere else it starts a (child) run with its own."""
    import asyncio

    tc = context.ctx()
    if tc is not None and tc.env is task.env:
        return task.fn(**inputs)
    session = tc.session if tc is not None else Session()
    if task.is_async:
        async def _run():
            return (await asyncio.to_thread(session.execute, task, inputs, tc)).outputs
        return _run()
    return session.execute(task, inputs, tc).outputs


async def call_task_async(task, inputs: dict) -> Any:
    """``await task.aio(...)``: a connector call inside a run polls on the caller's event loop;
    any other call runs as ``call_task`` does, in a worker thread."""
    import asyncio

    tc = context.ctx()
    session = tc.session if tc is not None else Session()
    if tc is not None and getattr(task, "runs_in_caller_stack", False) and tc.stack in session._open:
        return (await session.execute_async(task, inputs, tc)).outputs
    return (await asyncio.to_thread(session.execute, task, inputs, tc)).outputs
