"""The snapshot manager: the one writer of resource rows and journal intents.

Pulumi's engine keeps the same rule (``pkg/backend/snapshot.go``): steps decide and act, and
every change to the recorded snapshot goes through one object, so the meaning of a row is
defined in one place. Apply, recovery, refresh, reuse and reaping all write through here.

An intent is committed before the provider call it announces; the row it changes is written
in the same transaction that closes it. The rules that keep the state truthful:

- a create records the new row; when it replaces an old copy (create-before-delete), the old
  row moves to ``pending_deletes`` in that same transaction, so at no instant is a live thing
  recorded nowhere;
- a delete removes only the row of the copy it deleted (matched by id), never a newer copy
  recorded under the same URN;
- a read that finds a thing gone drops its row; one that finds it changed records what it
  found.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from .resource import Declaration, Record
from .state import State


def decl_record(d: Declaration) -> dict:
    """What recovery needs to adopt a half-done create (never the secret inputs)."""
    return {"deps": d.deps, "options": d.options.to_dict(), "ephemeral": d.ephemeral,
            "parent": d.parent, "idle_ttl": d.idle_ttl}


@dataclass(frozen=True)
class Intent:
    seq: int
    op: str
    urn: str
    name: str


class SnapshotManager:
    """Writes for one stack, on behalf of one run (apply, recovery, refresh or a reap)."""

    def __init__(self, state: State, stack: str, run_id: str | None, reason: str | None = None):
        self.state = state
        self.stack = stack
        self.run_id = run_id
        self.reason = reason

    # ------------------------------------------------------------------ intents
    def begin(self, op: str, urn: str, type_: str, name: str, inputs: dict | None = None,
              decl: dict | None = None, reason: str | None = None) -> Intent:
        with self.state.write():
            seq = self.state._journal_insert(self.run_id, self.stack, urn, type_, op, name, inputs,
                                             reason or self.reason, decl)
        return Intent(seq, op, urn, name)

    def failed(self, intent: Intent, error: str) -> None:
        """The provider call raised: nothing changed (providers' calls are transactional)."""
        with self.state.write():
            self.state._journal_close(intent.seq, "failed", error)

    def created(self, intent: Intent, rec: Record, replaces: Record | None = None) -> bool:
        """The create returned. False when recovery closed the intent meanwhile (a create that
        outlived its timeout and was settled by someone else): nothing is written then."""
        with self.state.write():
            if not self.state._journal_close(intent.seq, "done", None):
                return False
            if replaces is not None:
                self._to_pending(replaces)
            self.state._put(rec)
        return True

    def updated(self, intent: Intent, rec: Record) -> None:
        with self.state.write():
            self.state._journal_close(intent.seq, "done", None)
            self.state._put(rec)

    def deleted(self, intent: Intent, rec: Record) -> None:
        with self.state.write():
            self.state._journal_close(intent.seq, "done", None)
            self._remove(rec)

    # ------------------------------------------------------------------ rows without a provider call
    def record_options(self, rec: Record) -> None:
        """An options-only change (protect, retain_on_delete, deps, idle TTL, reusable or not):
        journaled, so that ``runs show`` lists it, and recorded in one transaction."""
        with self.state.write():
            seq = self.state._journal_insert(self.run_id, self.stack, rec.urn, rec.type, "options", rec.id,
                                             rec.inputs, self.reason, None)
            self.state._journal_close(seq, "done", None)
            self.state._put(rec)

    def adopt(self, rec: Record) -> Record:
        """A resumable job of a dead run becomes this run's (its teardown then deletes it)."""
        rec = dataclasses.replace(rec, run_id=self.run_id, last_used=time.time())
        with self.state.write():
            self.state._put(rec)
        return rec

    def imported(self, rec: Record) -> None:
        """An existing thing taken under management as is (``engine import``, tests' fixtures)."""
        with self.state.write():
            self.state._put(rec)

    def refreshed(self, rec: Record) -> None:
        """A read found the thing changed out of band: record what exists."""
        with self.state.write():
            self.state._put(rec, "pending_deletes" if rec.pending_delete else "resources")

    def gone(self, rec: Record) -> None:
        """A read found the thing gone."""
        with self.state.write():
            self._remove(rec)

    def touch_reusable(self, when: float | None = None) -> None:
        """A run used the stack's reusable resources: their idle clock starts again."""
        with self.state.write():
            self.state._touch_reusable(self.stack, when or time.time())

    # ------------------------------------------------------------------ recovery
    def settle(self, seq: int, put: Record | None = None, remove: Record | None = None,
               pending: Record | None = None) -> None:
        """Close a dead run's intent as recovered, with what recovery found, at once."""
        with self.state.write():
            if pending is not None:
                self._to_pending(pending)
            if remove is not None:
                self._remove(remove)
            if put is not None:
                self.state._put(put)
            self.state._journal_close(seq, "recovered", None)

    # ------------------------------------------------------------------ inside a transaction
    def _to_pending(self, rec: Record) -> None:
        self.state._remove(rec.urn, rec.id)
        self.state._put(dataclasses.replace(rec, pending_delete=True), "pending_deletes")

    def _remove(self, rec: Record) -> None:
        table = "pending_deletes" if rec.pending_delete else "resources"
        self.state._remove(rec.urn, rec.id, table)
