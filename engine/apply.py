"""Acting: execute a plan's steps against providers, journaling each one first.

Steps run as a DAG: a create or update waits for the steps of its dependencies; a delete
waits for the deletes of everything that depends on it or is its child, so children go
first. Independent steps run concurrently, at most ``parallelism`` at a time. On the first
failure no new step starts, the running ones finish, and the error is raised.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
# Imported now, not on first use: the module registers at-fork hooks (acquire a lock before a
# fork, release it after), and a provider thread may be forking meanwhile (pyspark launches its
# gateway JVM with a preexec_fn). A hook registered inside another thread's fork would release,
# after it, a lock it never took: the one a concurrent submit holds ("release unlocked lock").
import concurrent.futures.thread  # noqa: F401
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Callable

from .errors import NotFound, ProviderError
from .plan import Plan, Step
from .resource import Declaration, Provider, Record
from .state import State

ProviderLookup = Callable[[str], Provider]


def _fault_pause(op: str) -> None:
    """Chaos hook for crash tests: ``TASKRIG_FAULT_PAUSE=delete:3`` sleeps 3 s after the
    journal intent of every delete is committed and before the provider is called, so a
    test can ``kill -9`` the engine at exactly that point."""
    spec = os.environ.get("TASKRIG_FAULT_PAUSE")
    if spec:
        for item in spec.split(","):
            name, _, secs = item.partition(":")
            if name == op:
                time.sleep(float(secs or 1))


def decl_record(d: Declaration) -> dict:
    """What recovery needs to adopt a half-done create (never the secret inputs)."""
    return {"deps": d.deps, "options": d.options.to_dict(), "ephemeral": d.ephemeral,
            "parent": d.parent, "idle_ttl": d.idle_ttl}


@dataclass
class StepResult:
    step: Step
    record: Record | None
    elapsed: float


class Applier:
    def __init__(self, state: State, providers: ProviderLookup, stack: str, run_id: str,
                 parallelism: int = 8, on_start=None, on_done=None, reason: str | None = None):
        self.state = state
        self.providers = providers
        self.stack = stack
        self.run_id = run_id
        self.parallelism = max(1, parallelism)
        self.on_start = on_start or (lambda step: None)
        self.on_done = on_done or (lambda result: None)
        self.reason = reason

    # ------------------------------------------------------------------ ordering
    @staticmethod
    def _prerequisites(steps: list[Step]) -> dict[int, set[int]]:
        """For each step, the steps that must finish first (linear in steps plus edges)."""
        forward = {s.urn: i for i, s in enumerate(steps) if s.op != "delete"}
        deletes = {s.urn: i for i, s in enumerate(steps) if s.op == "delete"}
        pre: dict[int, set[int]] = {i: set() for i in range(len(steps))}
        for i, s in enumerate(steps):
            if s.op == "delete":
                # What this one depends on, or sits under, is deleted after it.
                for d in list(s.old.deps) + ([s.old.parent] if s.old.parent else []):
                    j = deletes.get(d)
                    if j is not None and j != i:
                        pre[j].add(i)
            else:
                deps = list(s.new.deps) + ([s.new.parent] if s.new.parent else [])
                pre[i].update(forward[d] for d in deps if d in forward)
                if s.urn in deletes:  # a crashed run's leftover under the same URN goes first
                    pre[i].add(deletes[s.urn])
        return pre

    def apply(self, plan: Plan) -> dict[str, Record]:
        """Run every step; returns the resulting record of each desired URN."""
        steps = plan.steps
        pre = self._prerequisites(steps)
        waiting = {i: len(p) for i, p in pre.items()}
        dependents: dict[int, list[int]] = {i: [] for i in pre}
        for i, p in pre.items():
            for j in p:
                dependents[j].append(i)
        ready = collections.deque(i for i in range(len(steps)) if not waiting[i])
        results: dict[str, Record] = {}
        running: dict[cf.Future, int] = {}
        finished_count = 0
        error: BaseException | None = None

        def finish(i: int) -> None:
            nonlocal finished_count
            finished_count += 1
            for j in dependents[i]:
                waiting[j] -= 1
                if not waiting[j]:
                    ready.append(j)

        pool = cf.ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply")
        try:
            while True:
                while error is None and ready and len(running) < self.parallelism:
                    i = ready.popleft()
                    if steps[i].op == "same":  # nothing to call, nothing to journal
                        results[steps[i].urn] = self._adopt(steps[i].old)
                        self.on_done(StepResult(steps[i], steps[i].old, 0.0))
                        finish(i)
                        continue
                    self.on_start(steps[i])
                    running[pool.submit(self._execute, steps[i])] = i
                if not running:
                    break
                completed, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in completed:
                    i = running.pop(fut)
                    try:
                        res: StepResult = fut.result()
                    except BaseException as e:  # noqa: BLE001 - first error wins, the rest drain
                        error = error or e
                        continue
                    if res.record is not None and res.step.op != "delete":
                        results[res.step.urn] = res.record
                    self.on_done(res)
                    finish(i)
        finally:
            # Ctrl-C lands here too: running provider calls finish, so nothing is half-recorded.
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error
        if finished_count < len(steps):
            stuck = [steps[i].urn for i in range(len(steps)) if waiting[i]]
            raise RuntimeError("dependency cycle among: " + ", ".join(stuck))
        return results

    def _adopt(self, rec: Record) -> Record:
        """An unchanged resource; a dead run's resumable job becomes this run's (one write, so
        its teardown deletes it and a crash now leaves it to the next run again)."""
        if rec.ephemeral and rec.run_id != self.run_id:
            rec = dataclasses.replace(rec, run_id=self.run_id, last_used=time.time())
            self.state.put_resource(rec)
        return rec

    # ------------------------------------------------------------------ one step
    def _call(self, step: Step, fn, *args):
        timeout = None
        if step.new is not None:
            t = step.new.options.timeouts
            timeout = {"create": t.create, "update": t.update, "replace": t.create}.get(step.op)
        elif step.old is not None:
            timeout = step.old.options.timeouts.delete
        if not timeout:
            return fn(*args)
        with cf.ThreadPoolExecutor(max_workers=1) as ex:
            fut = ex.submit(fn, *args)
            try:
                return fut.result(timeout=timeout)
            except cf.TimeoutError:
                raise TimeoutError(f"{step.op} did not finish within {timeout} s (options.timeouts)") from None

    def _execute(self, step: Step) -> StepResult:
        t0 = time.monotonic()
        try:
            if step.op == "create":
                rec = self._create(step.new)
            elif step.op == "update":
                rec = self._update(step)
            elif step.op == "replace":
                if step.delete_before_replace:
                    self._delete(step.old, "replace")
                    rec = self._create(step.new)
                else:
                    suffix = hashlib.sha1(repr(sorted(step.new.inputs.items())).encode()).hexdigest()[:6]
                    rec = self._create(step.new, suffix=suffix)
                    self._delete(step.old, "replace", keep_row=True)
            elif step.op == "delete":
                self._delete(step.old, step.reason or self.reason)
                rec = None
            elif step.op == "read":
                rec = self._read(step.new)
            else:
                raise ValueError(f"unknown step {step.op}")
        except ProviderError:
            raise
        except NotFound as e:
            raise ProviderError(step.urn, step.op, e) from e
        except Exception as e:
            raise ProviderError(step.urn, step.op, e) from e
        return StepResult(step, rec, time.monotonic() - t0)

    def _inputs(self, d: Declaration) -> dict:
        return {**d.inputs, **d.secret_inputs} if d.secret_inputs else d.inputs

    def _record(self, d: Declaration, id: str, outputs: dict, created: float | None = None) -> Record:
        now = time.time()
        return Record(urn=d.urn, type=d.type, stack=self.stack, id=id, inputs=d.inputs, outputs=outputs,
                      deps=list(d.deps), options=d.options, ephemeral=d.ephemeral,
                      run_id=self.run_id if d.ephemeral else None, parent=d.parent, idle_ttl=d.idle_ttl,
                      last_used=now, created=created or now)

    def _create(self, d: Declaration, suffix: str = "") -> Record:
        name = d.physical_name + (f"-{suffix}" if suffix else "")
        provider = self.providers(d.type)
        seq = self.state.journal_open(self.run_id, self.stack, d.urn, d.type, "create", name, d.inputs,
                                      self.reason, decl_record(d))
        _fault_pause("create")
        try:
            id, outputs = self._call_step("create", d, provider.create, d.urn, self._inputs(d), name)
        except BaseException as e:
            self.state.journal_close(seq, "failed", f"{type(e).__name__}: {e}")
            raise
        rec = self._record(d, id, outputs)
        self.state.journal_close(seq, record=rec)
        return rec

    def _call_step(self, op: str, d: Declaration, fn, *args):
        return self._call(Step(op, d.urn, d.type, new=d), fn, *args)

    def _update(self, step: Step) -> Record:
        d, old = step.new, step.old
        provider = self.providers(d.type)
        seq = self.state.journal_open(self.run_id, self.stack, d.urn, d.type, "update", old.id, d.inputs,
                                      self.reason, decl_record(d))
        _fault_pause("update")
        try:
            outputs = self._call(step, provider.update, old.id, old.inputs, self._inputs(d), old.outputs)
        except BaseException as e:
            self.state.journal_close(seq, "failed", f"{type(e).__name__}: {e}")
            raise
        rec = self._record(d, old.id, outputs, created=old.created)
        rec.run_id = old.run_id if not d.ephemeral else self.run_id
        self.state.journal_close(seq, record=rec)
        return rec

    def _delete(self, rec: Record, reason: str | None, keep_row: bool = False) -> None:
        provider = self.providers(rec.type)
        seq = self.state.journal_open(self.run_id, self.stack, rec.urn, rec.type, "delete", rec.id, rec.inputs,
                                      reason)
        _fault_pause("delete")
        try:
            if not rec.options.retain_on_delete:
                try:
                    self._call(Step("delete", rec.urn, rec.type, old=rec), provider.delete, rec.id, rec.inputs,
                               rec.outputs)
                except NotFound:
                    pass
        except BaseException as e:
            self.state.journal_close(seq, "failed", f"{type(e).__name__}: {e}")
            raise
        self.state.journal_close(seq, remove_urn=None if keep_row else rec.urn)

    def _read(self, d: Declaration) -> Record:
        provider = self.providers(d.type)
        id = d.inputs.get("id") or d.physical_name
        outputs = provider.read(id, self._inputs(d), None)
        if outputs is None:
            raise NotFound(f"{d.urn}: the existing resource {id!r} was not found")
        return self._record(d, id, outputs)
