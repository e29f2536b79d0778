"""``python -m engine.reaper STATE STACK [RUNTIME_DIR]``: destroys a stack's reusable resources
once they have been idle past their ``idle_ttl``, with nobody running a command.

One reaper per stack and host (a file lock says which); it sleeps until the earliest expiry,
takes the stack lock (a run in progress is using the resources: it tries again later), lets
recovery reap what expired, and exits once the stack holds no reusable resource it may reap.
With a shared (PostgreSQL) state, reapers on several machines may watch one stack: the stack
lock lets exactly one act at a time, and each leaves another host's local processes to that
host's reaper. STATE is then the URL without its password (given as PGPASSWORD) and
RUNTIME_DIR the runtime folder of the engine that started it.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from .errors import LockHeld, StateError
from .lifecycle import Session
from .lock import lock_dir
from .pgstate import PgTarget
from .recover import foreign_records
from .state import StateLost

MAX_LIFETIME = 7 * 24 * 3600.0


def main(state_path: str, stack: str, runtime: str | None = None) -> int:
    if runtime:
        os.environ["ENGINE_RUNTIME_DIR"] = runtime
    session = Session(state=state_path)
    target = session.state_path
    guard = (target.local_dir if isinstance(target, PgTarget) else lock_dir(Path(state_path))) / f"{stack}.reaper"
    guard.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another reaper watches this stack
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    started = time.time()
    while time.time() - started < MAX_LIFETIME:
        try:
            state = session.open_state()
        except StateError:  # a PostgreSQL state unreachable for now (restarting): try again
            time.sleep(5.0)
            continue
        due = time.time() + 5.0
        try:
            kept, _ = foreign_records(state, [r for r in state.resources(stack) if not r.ephemeral and r.idle_ttl],
                                      session.provider)
            if not kept:
                return 0
            due = min((r.last_used or r.created or 0) + r.idle_ttl for r in kept)
            if due <= time.time():
                try:
                    with session.lock(stack, "reap idle resources", state):
                        session.recover(state, stack)
                except LockHeld:
                    pass  # a run is using them; its end resets the clock
        except StateLost:
            pass  # the connection broke mid-reap: what was committed is recovered on the next try
        finally:
            state.close()
        time.sleep(min(max(due - time.time(), 0.2), 30.0))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
