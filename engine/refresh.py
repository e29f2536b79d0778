"""Reading recorded resources back from their providers: drift and out-of-band changes.

One resource for a plan (``up`` with ``refresh_on_up``, a lock-free preview, an image build),
or every resource of a stack (``engine refresh``, under the lock). What is read is recorded
only through the snapshot manager, and only when the caller holds the lock.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .resource import Read, Record
from .snapshot import SnapshotManager
from .state import State

if TYPE_CHECKING:
    from .lifecycle import Session


def refresh_one(session: Session, state: State, r: Record, write: bool) -> Record | None:
    """Read a recorded resource back; None if it is gone. ``write`` records what was read
    (refresh, under the lock); without it nothing is written (a preview, lock-free)."""
    read = session.provider(r.type).read(r.id, r.inputs, r.outputs)
    if read is None:
        session.reporter.message(f"{r.urn} no longer exists (drift)")
        if write:
            SnapshotManager(state, r.stack, None, "refresh").gone(r)
        return None
    inputs, outputs = (read.inputs, read.outputs) if isinstance(read, Read) else (r.inputs, read)
    if inputs != r.inputs or outputs != r.outputs:
        if inputs != r.inputs:
            session.reporter.message(f"{r.urn} changed out of band")
        r = dataclasses.replace(r, inputs=inputs, outputs=outputs)
        if write:
            SnapshotManager(state, r.stack, None, "refresh").refreshed(r)
    return r


def refresh_stack(session: Session, stack: str) -> list[Record]:
    """Every resource of the stack read back and recorded, recovering dead runs first; another
    host's local processes cannot be read from here and are returned as recorded."""
    state = session.open_state()
    try:
        with session.lock(stack, "refresh", state):
            session.recover(state, stack)
            out = []
            for r in state.resources(stack) + state.pending_deletes(stack):
                if session._foreign(state, r):
                    session.reporter.message(f"{r.urn} ({r.id}) is a local process of host {r.host}: not read from here")
                    out.append(r)
                    continue
                r2 = refresh_one(session, state, r, write=True)
                if r2 is not None:
                    out.append(r2)
            return out
    finally:
        state.close()
