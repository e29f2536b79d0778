"""Acting: execute a plan's steps against providers, journaling each one first.

The plan decides; this module only schedules. Each step is handed to its kind
(``engine.steps.KINDS``), which calls the provider and records through the snapshot manager.

Steps run as a DAG, at most ``parallelism`` at a time (Pulumi's step executor orders them the
same way):

- a create, update or replace waits for the steps of its dependencies and its parent;
- a resource no longer declared is deleted after every create and update of the plan (so that
  whatever replaced it exists first), dependents and children before what they sit on;
- the old copy of a create-before-delete replacement is deleted after every create and
  update too, so dependents point at the new copy before the old one goes;
- a delete-first replacement is two nodes: the old copy's delete, among the deletes (its
  dependents, which the plan replaces delete-first too, and those no longer declared go
  before it), then the create, which its dependents' creates wait for; were that create to
  fail, theirs never start, so no row names a resource that is gone;
- a dead run's leftover under a URN that the plan creates again is deleted first.

On the first failure no new step starts, the running ones finish, and the error is raised.
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
import time
from dataclasses import dataclass
from typing import Callable

from .errors import ProviderError
from .plan import Plan, Step
from .resource import Provider, Record
from .snapshot import SnapshotManager
from .state import State
from .steps import KINDS, ReplacedDeleteStep, StepContext

ProviderLookup = Callable[[str], Provider]
_REPLACED_DELETE = ReplacedDeleteStep()


@dataclass
class StepResult:
    step: Step
    record: Record | None
    elapsed: float


@dataclass
class _Node:
    """One schedulable unit: a plan step, the deferred delete of a replaced copy, or the
    barrier that the late deletes wait behind (it does nothing)."""

    step: Step | None
    kind: object | None
    late: bool = False  # a delete that waits for every forward step


def _before_delete_first_replaces(steps: list[Step], deletes: dict[str, list[int]], nodes) -> set[str]:
    """URNs being deleted that depend, directly or through each other, on a resource replaced
    delete-first: the old copy of that goes before its replacement exists, so nothing may still
    depend on it then. Their deletes run before its delete (dependents first), not after every
    forward step (were the replacement's create to fail, a late delete would never run, and the
    state would keep a dependent of a resource that no longer exists)."""
    gone = {s.urn for s in steps if s.op == "replace" and s.delete_before_replace}
    if not gone:
        return set()
    early: set[str] = set()
    grew = True
    while grew:  # bounded: each pass adds a URN, or ends
        grew = False
        for urn, idx in deletes.items():
            if urn in early or urn in gone:
                continue
            for i in idx:
                old = nodes[i].step.old
                if any(d in gone or d in early for d in [*old.deps, *([old.parent] if old.parent else [])]):
                    early.add(urn)
                    grew = True
                    break
    return early


def _waits_for(pre: dict[int, set[int]], start: int, target: int) -> bool:
    """Does node ``start`` wait, directly or not, for node ``target``? (Each node visited once.)"""
    seen, todo = {start}, [start]
    while todo:
        for j in pre[todo.pop()]:
            if j == target:
                return True
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return False


def _nodes(steps: list[Step]) -> tuple[list[_Node], dict[int, set[int]]]:
    """The DAG: nodes and, for each, the nodes that must finish first (linear in steps plus
    edges: the late deletes share one barrier node instead of an edge to every forward step)."""
    nodes: list[_Node] = []
    forward: dict[str, int] = {}
    deletes: dict[str, list[int]] = collections.defaultdict(list)  # a URN's row and its pending copies
    replaced: list[int] = []
    delete_first: list[tuple[int, Step]] = []  # the old copy's delete node, and its replace step
    for s in steps:
        if s.op == "delete":
            deletes[s.urn].append(len(nodes))
            nodes.append(_Node(s, KINDS["delete"]))
            continue
        if s.op == "replace" and s.delete_before_replace:
            # A node of its own, ordered among the deletes: its dependents' deletes go first.
            deletes[s.urn].append(len(nodes))
            delete_first.append((len(nodes), s))
            nodes.append(_Node(Step("delete", s.urn, s.type, old=s.old, reason="replace"), KINDS["delete"]))
        forward[s.urn] = len(nodes)
        nodes.append(_Node(s, KINDS[s.op]))
        if s.op == "replace" and not s.delete_before_replace:
            old = dataclasses.replace(s.old, pending_delete=True)
            replaced.append(len(nodes))
            nodes.append(_Node(Step("delete", s.urn, s.type, old=old, reason="replace"), _REPLACED_DELETE, late=True))
    barrier = len(nodes)
    nodes.append(_Node(None, None))
    pre: dict[int, set[int]] = {i: set() for i in range(len(nodes))}
    pre[barrier] = set(forward.values())
    for i in replaced:
        pre[i].add(barrier)
    early = _before_delete_first_replaces(steps, deletes, nodes)
    for urn, idx in deletes.items():
        for i in idx:
            nodes[i].late = urn not in forward and urn not in early
            if nodes[i].late:
                pre[i].add(barrier)
    for urn, idx in deletes.items():
        for i in idx:
            s = nodes[i].step
            # What this one depends on, or sits under, is deleted after it (unless that is a
            # leftover that goes first, before the forward steps this one waits for).
            for d in list(s.old.deps) + ([s.old.parent] if s.old.parent else []):
                for j in deletes.get(d, ()):
                    if j != i and not (nodes[i].late and not nodes[j].late):
                        pre[j].add(i)
    for urn, i in forward.items():
        s = nodes[i].step
        deps = list(s.new.deps) + ([s.new.parent] if s.new.parent else [])
        pre[i].update(forward[d] for d in deps if d in forward)
        pre[i].update(deletes.get(urn, ()))
    # The old copy of a delete-first replacement goes once the steps of what its replacement
    # depends on are done (Pulumi deletes it when the resource registers, its inputs known), so a
    # failed dependency leaves it in place; unless one of those waits for this delete (a
    # dependent replaced with it), which would be a cycle.
    for i, s in delete_first:
        for d in list(s.new.deps) + ([s.new.parent] if s.new.parent else []):
            j = forward.get(d)
            if j is not None and not _waits_for(pre, j, i):
                pre[i].add(j)
    return nodes, pre


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
        self.snap = SnapshotManager(state, stack, run_id, reason)
        self.ctx = StepContext(providers, self.snap, stack, run_id)

    def apply(self, plan: Plan) -> dict[str, Record]:
        """Run every step; returns the resulting record of each desired URN."""
        results: dict[str, Record] = {}
        # "same" steps make no call and wait for nothing: settled here, outside the DAG (a
        # no-change up of 100,000 resources is all of them). What waits on one finds it done.
        steps = []
        for step in plan.steps:
            if step.op == "same":
                rec = KINDS["same"].apply(self.ctx, step)
                results[step.urn] = rec
                self.on_done(StepResult(step, rec, 0.0))
            else:
                steps.append(step)
        if not steps:
            return results
        nodes, pre = _nodes(steps)
        waiting = {i: len(p) for i, p in pre.items()}
        dependents: dict[int, list[int]] = {i: [] for i in pre}
        for i, p in pre.items():
            for j in p:
                dependents[j].append(i)
        ready = collections.deque(i for i in range(len(nodes)) if not waiting[i])
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
                    node = nodes[i]
                    if node.step is None:  # the barrier
                        finish(i)
                        continue
                    self.on_start(node.step)
                    running[pool.submit(self._execute, node)] = i
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
        if finished_count < len(nodes):
            stuck = sorted({nodes[i].step.urn for i in range(len(nodes)) if waiting[i] and nodes[i].step})
            raise RuntimeError("dependency cycle among: " + ", ".join(stuck))
        return results

    def _execute(self, node: _Node) -> StepResult:
        t0 = time.monotonic()
        step = node.step
        try:
            rec = node.kind.apply(self.ctx, step)
        except ProviderError:
            raise
        except Exception as e:
            raise ProviderError(step.urn, step.op, e) from e
        return StepResult(step, rec, time.monotonic() - t0)
