"""Run ids, and a stack operation (a program's up, a destroy, a reap) recorded as a run.

The record comes first: the run row is committed before the operation acts, so a crash
mid-way leaves a run still marked active, which the next command on the stack recovers.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from .secrets import error_text
from .state import State


def new_run_id() -> str:
    """Sortable and unique: UTC time to the millisecond plus 4 random hex digits."""
    now = datetime.now(timezone.utc)
    return f"r{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}{secrets.token_hex(2)}"


@contextlib.contextmanager
def recorded_run(state: State, stack: str, task: str, *, kind: str, status: str = "provisioning",
                 outputs: dict | None = None) -> Iterator[str]:
    """Start a run row and yield its id; however the block ends, record how (the error's
    masked text for a failure, then the exception goes on; ``outputs`` for a success)."""
    run_id = new_run_id()
    state.start_run(run_id, stack, task, kind=kind, status=status)
    try:
        yield run_id
    except BaseException as e:
        state.update_run(run_id, status="failed", finished=time.time(), error=error_text(e))
        raise
    state.update_run(run_id, status="succeeded", finished=time.time(), **({"outputs": outputs} if outputs else {}))
