"""One task run from start to end: declare, check, lock, recover, plan, apply, attach, run,
tear down, record. Also the stack-wide operations the CLI offers (preview, destroy, refresh).

Validation (target, plugin config, provider ``check``, secrets) happens before the state file
is opened, so bad input leaves it byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets as _secrets
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from . import context, runenv
from .apply import Applier
from .errors import ConfigError, EngineError, HostLocal
from .lock import PgStackLock, StackLock
from .pgstate import PgTarget
from .plan import Plan, deletion_plan, plan as make_plan
from .plugin import Attachment, DeclareContext
from .recover import expired, foreign_host, foreign_records, recover_stack
from .registry import ProviderRegistry, TaskPluginRegistry
from .report import Reporter
from .sdk import Secret
from .secrets import (error_text, register, remove_secret_files, resolve_secret, resolve_secrets,
                      write_secret_files)
from .resource import Declaration, Diff, ProviderContext, Read, Record
from .snapshot import SnapshotManager
from .state import State, locate, runtime_dir


def new_run_id() -> str:
    """Sortable and unique: UTC time to the millisecond plus 4 random hex digits."""
    now = datetime.now(timezone.utc)
    return f"r{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}{_secrets.token_hex(2)}"


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
            self._reap(state, stack, gone)

    def _reap(self, state: State, stack: str, records: list[Record]) -> None:
        run_id = new_run_id()
        state.start_run(run_id, stack, "idle_ttl expired", kind="reap", status="tearing_down")
        self.reporter.message(f"{len(records)} reusable resource(s) of {stack} idle past their TTL: destroying")
        try:
            self._applier(state, stack, run_id, reason="idle_ttl expired").apply(deletion_plan(stack, records))
        except BaseException as e:
            state.update_run(run_id, status="failed", finished=time.time(), error=error_text(e))
            raise
        state.update_run(run_id, status="succeeded", finished=time.time())

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
        recorded = state.resources(stack) if prune else [r for r in map(state.resource, (d.urn for d in decls)) if r]
        wanted = {d.urn for d in decls}
        current = []
        for r in recorded:
            p = self.provider(r.type)
            if self._foreign(state, r):  # another host's local processes: not readable from here
                current.append(r)
                continue
            if refresh or (r.urn in wanted and p.refresh_on_up and not r.ephemeral):
                r = self._refresh_one(state, r, write=refresh)
                if r is None:
                    continue
            current.append(r)
        by_urn = {r.urn: r for r in current}
        diffs = {d.urn: self._diff(by_urn[d.urn], d) for d in decls if d.urn in by_urn and not d.read_only}
        return make_plan(stack, decls, current, diffs, run_id=run_id, prune=prune)

    def _diff(self, old: Record, d: Declaration) -> Diff:
        """The provider's diff, with its class-wide ``delete_before_replace`` (a local cluster
        cannot run twice under one name) folded in."""
        provider = self.provider(d.type)
        diff = provider.diff(old.inputs, d.inputs)
        if provider.delete_before_replace and not diff.delete_before_replace:
            diff = dataclasses.replace(diff, delete_before_replace=True)
        return diff

    def _refresh_one(self, state: State, r: Record, write: bool) -> Record | None:
        """Read a recorded resource back; None if it is gone. ``write`` records what was read
        (refresh, under the lock); without it nothing is written (a preview, lock-free)."""
        read = self.provider(r.type).read(r.id, r.inputs, r.outputs)
        if read is None:
            self.reporter.message(f"{r.urn} no longer exists (drift)")
            if write:
                SnapshotManager(state, r.stack, None, "refresh").gone(r)
            return None
        inputs, outputs = (read.inputs, read.outputs) if isinstance(read, Read) else (r.inputs, read)
        if inputs != r.inputs or outputs != r.outputs:
            if inputs != r.inputs:
                self.reporter.message(f"{r.urn} changed out of band")
            r = dataclasses.replace(r, inputs=inputs, outputs=outputs)
            if write:
                SnapshotManager(state, r.stack, None, "refresh").refreshed(r)
        return r

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
                self._teardown(state, stack, run_id, nested=prep.nested, urns=[d.urn for d in prep.decls])
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

    def _teardown(self, state: State, stack: str, run_id: str, nested: bool = False, urns=()) -> None:
        if nested:  # its own declared resources, by key (see _plan); the caller handles the rest
            records = [r for r in map(state.resource, urns) if r is not None and r.ephemeral]
        else:
            records = state.resources(stack, ephemeral=True)
        mine = [r for r in records if r.run_id == run_id]
        if not nested:  # old copies this run replaced and could not delete yet
            mine += [r for r in state.pending_deletes(stack) if r.ephemeral and r.run_id == run_id]
        if not nested:
            # External jobs of crashed runs that this run could have resumed and did not ask
            # for: stale now, so they go with this run's own resources.
            mine += [r for r in records if r.options.resume_on_recover
                     and r.run_id != run_id and (state.run(r.run_id) or {}).get("status") == "crashed"]
        if mine:
            plan = deletion_plan(stack, mine)
            self.reporter.plan(plan, "teardown")
            self._applier(state, stack, run_id).apply(plan)
        if not nested and state.has_reusable(stack):
            SnapshotManager(state, stack, run_id).touch_reusable()
            spawn_reaper(self.state_path, stack)

    # ------------------------------------------------------------------ Pulumi programs
    def program_declarations(self, target: str, stack: str | None = None):
        from .program import declarations, find_project

        project = find_project(target, stack)
        decls = declarations(project)
        for d in decls:
            try:
                d.inputs = self.provider(d.type).check(d.inputs)
            except ConfigError as e:  # which of the program's resources: its name and type
                err = ConfigError(f"resource {d.physical_name!r} ({d.type}) of stack {project.name}: {e}")
                err.field = e.field
                raise err from None
        return project, decls

    def preview_program(self, target: str, stack: str | None = None) -> Plan:
        project, decls = self.program_declarations(target, stack)
        if not self.state_path.exists():
            return make_plan(project.name, decls, [], {})
        state = State.reader(self.state_path)
        try:
            return self._plan(state, project.name, decls, None)
        finally:
            state.close()

    def up_program(self, target: str, stack: str | None = None) -> tuple[Plan, dict]:
        """Plan and apply a Pulumi program's resources; they persist (no teardown)."""
        project, decls = self.program_declarations(target, stack)
        state = self.open_state()
        try:
            with self.lock(project.name, f"up {target}", state):
                self.recover(state, project.name)
                run_id = new_run_id()
                state.start_run(run_id, project.name, f"program {project.program}", kind="program")
                try:
                    plan = self._plan(state, project.name, decls, run_id)
                    self._refuse_foreign(state, project.name, [s.old for s in plan.steps])
                    self.reporter.plan(plan, "up")
                    self._applier(state, project.name, run_id).apply(plan)
                except BaseException as e:
                    state.update_run(run_id, status="failed", finished=time.time(), error=error_text(e))
                    raise
                state.update_run(run_id, status="succeeded", finished=time.time())
                return plan, state.run(run_id)
        finally:
            state.close()

    def destroy(self, stack: str) -> Plan:
        state = self.open_state()
        try:
            with self.lock(stack, "destroy", state):
                self.recover(state, stack)
                records, theirs = foreign_records(state, state.resources(stack) + state.pending_deletes(stack),
                                                  self.provider)
                plan = deletion_plan(stack, records)
                self.reporter.plan(plan, "destroy")
                if plan.steps:
                    run_id = new_run_id()
                    state.start_run(run_id, stack, "destroy", kind="destroy", status="tearing_down")
                    try:
                        self._applier(state, stack, run_id, reason="destroy").apply(plan)
                    except BaseException as e:
                        state.update_run(run_id, status="failed", finished=time.time(), error=error_text(e))
                        raise
                    state.update_run(run_id, status="succeeded", finished=time.time())
                if theirs:  # deleted what this host can reach; the rest is another host's
                    self._refuse_foreign(state, stack, theirs)
                return plan
        finally:
            state.close()

    def refresh(self, stack: str) -> list[Record]:
        state = self.open_state()
        try:
            with self.lock(stack, "refresh", state):
                self.recover(state, stack)
                out = []
                for r in state.resources(stack) + state.pending_deletes(stack):
                    if self._foreign(state, r):
                        self.reporter.message(f"{r.urn} ({r.id}) is a local process of host {r.host}: not read from here")
                        out.append(r)
                        continue
                    r2 = self._refresh_one(state, r, write=True)
                    if r2 is not None:
                        out.append(r2)
                return out
        finally:
            state.close()


def spawn_reaper(state_path, stack: str) -> None:
    """A detached process that destroys the stack's reusable resources once idle past their TTL.
    For a PostgreSQL state its arguments carry the URL without the password (a command line is
    public) and the runtime folder; the password goes in its environment, as PGPASSWORD."""
    env = None
    if isinstance(state_path, PgTarget):
        args = [state_path.public, stack, str(state_path.runtime_dir)]
        if state_path.password:
            env = {**os.environ, "PGPASSWORD": state_path.password}
    else:
        args = [str(Path(state_path).resolve()), stack]
    subprocess.Popen(
        [sys.executable, "-m", "engine.reaper", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd=os.getcwd(), env=env,
    )


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
