"""One lock per stack: an OS file lock on a sidecar file, so it dies with its process.

The holder writes who it is (pid, host, operation, start, lock id) into the file it locks,
so a second engine can name it. ``unlock`` unlinks the file: the next engine locks a fresh
inode, and an acquirer that raced the unlink notices the inode changed and tries again.

A PostgreSQL state uses ``PgStackLock`` instead: a session-level advisory lock per stack, on
the session the operation writes with, and a ``locks`` table naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError, LockHeld

_STACK_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def lock_dir(state_path: Path) -> Path:
    return state_path.parent / (state_path.name + ".locks")


def check_stack_name(stack: str) -> str:
    if not _STACK_RE.match(stack or ""):
        raise ConfigError(f"{stack!r} is not a valid stack name (letters, digits, '_', '.', '-')", "name")
    return stack


class StackLock:
    def __init__(self, state_path: Path, stack: str, operation: str):
        self.stack = check_stack_name(stack)
        self.path = lock_dir(state_path) / f"{stack}.lock"
        self.operation = operation
        self.lock_id = uuid.uuid4().hex[:12]
        self._fd: int | None = None

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, timeout: float = 0.0, on_wait=None) -> "StackLock":
        """Take the lock, waiting up to ``timeout`` seconds; raise LockHeld naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + max(timeout, 0.0)
        announced = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise LockHeld(self.stack, self.holder()) from None
                if on_wait and not announced:
                    on_wait(self.holder())
                    announced = True
                time.sleep(0.1)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # unlocked (unlinked) between our open and our flock
                os.close(fd)
                continue
            info = {"lock_id": self.lock_id, "pid": os.getpid(), "host": socket.gethostname(),
                    "operation": self.operation,
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            self._fd = fd
            return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def force_unlock(state_path: Path, stack: str, lock_id: str) -> dict:
    """Break a lock whose holder cannot release it; the lock id must match, as in Terraform."""
    lock = StackLock(state_path, stack, "unlock")
    holder = lock.holder()
    if not holder:
        raise ConfigError(f"stack {stack!r} is not locked", "STACK")
    if holder.get("lock_id") != lock_id:
        raise ConfigError(f"lock id {lock_id!r} does not match the holder's {holder.get('lock_id')!r}", "LOCK_ID")
    lock.path.unlink(missing_ok=True)
    return holder


# ---------------------------------------------------------------------------------- PostgreSQL
_HELD_BY = ("select l.pid from pg_catalog.pg_locks l where l.locktype = 'advisory' and l.granted "
            "and l.database = (select oid from pg_catalog.pg_database where datname = current_database()) "
            "and l.classid::bigint = %s and l.objid::bigint = %s and l.objsubid = 1 limit 1")


def _key_parts(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as two oids: its high and low 32 bits."""
    u = key & 0xFFFFFFFFFFFFFFFF
    return u >> 32, u & 0xFFFFFFFF


def pg_holder(conn, target, stack: str) -> dict:
    """Who holds ``stack``'s advisory lock: the holder table's row when it belongs to the
    session holding the lock; ``{}`` when nobody holds it; ``{"backend_pid": N}`` when a session
    holds it whose row is not written yet. ``stale`` marks a row nobody holds any more."""
    hi, lo = _key_parts(target.lock_key(stack))
    live = conn.execute(_HELD_BY, [hi, lo]).fetchone()
    row = conn.execute("select lock_id, pid, host, operation, started, backend_pid from locks where stack = %s",
                       [stack]).fetchone()
    info = dict(zip(("lock_id", "pid", "host", "operation", "started", "backend_pid"), row)) if row else {}
    if live is None:
        return {**info, "stale": True} if info else {}
    if info.get("backend_pid") != live[0]:
        return {"backend_pid": live[0]}
    return info


class PgStackLock:
    """A stack's lock in a PostgreSQL state: a session-level advisory lock
    (``pg_try_advisory_lock``, keyed by schema and stack) on the connection of the operation's
    own State. It is released when that session ends, however it ends (kill -9, a lost machine
    once the server notices, a dropped connection), and since the operation writes on that same
    session, a lost lock cannot leave a writer behind: its writes fail with the connection.
    The holder's pid, host, operation and start go in the ``locks`` table, for the message."""

    def __init__(self, state, stack: str, operation: str):
        self.stack = check_stack_name(stack)
        self.state = state
        self.target = state.pg
        self.operation = operation
        self.lock_id = uuid.uuid4().hex[:12]
        self.key = self.target.lock_key(stack)
        self._held = False

    def holder(self) -> dict:
        with self.state._mutex:
            return pg_holder(self.state.conn, self.target, self.stack)

    def _try(self) -> bool:
        st = self.state
        with st._mutex:
            if self.key in st.held_locks:  # session locks nest: refuse to take ours twice
                return False
            got = st._x("select pg_try_advisory_lock(?)", [self.key]).fetchone()[0]
            if not got:
                return False
            st.held_locks.add(self.key)
            from .state import this_host

            info = {"stack": self.stack, "lock_id": self.lock_id, "pid": os.getpid(), "host": this_host(),
                    "operation": self.operation,
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "backend_pid": st.conn.info.backend_pid}
            with st.write():
                st._insert("locks", info)
            return True

    def acquire(self, timeout: float = 0.0, on_wait=None) -> "PgStackLock":
        deadline = time.monotonic() + max(timeout, 0.0)
        announced = False
        while not self._try():
            holder = self.holder()
            if time.monotonic() >= deadline:
                raise LockHeld(self.stack, holder, pg=True)
            if on_wait and not announced and holder.get("pid"):
                on_wait(holder)
                announced = True
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0.01)))
        self._held = True
        return self

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        st = self.state
        try:
            with st._mutex:
                with st.write():
                    st._x("delete from locks where stack = ? and lock_id = ?", [self.stack, self.lock_id])
                st._x("select pg_advisory_unlock(?)", [self.key])
        except Exception:  # noqa: BLE001 - a broken session has released the lock already
            pass
        finally:
            st.held_locks.discard(self.key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def pg_force_unlock(state, stack: str, lock_id: str) -> dict:
    """``engine unlock`` for PostgreSQL: an advisory lock of a live session cannot be taken from
    it (it goes when the session ends); what can be cleared is a stale holder row."""
    check_stack_name(stack)
    with state._mutex:
        holder = pg_holder(state.conn, state.pg, stack)
    if not holder:
        raise ConfigError(f"stack {stack!r} is not locked", "STACK")
    if holder.get("lock_id") is not None and holder.get("lock_id") != lock_id:
        raise ConfigError(f"lock id {lock_id!r} does not match the holder's {holder.get('lock_id')!r}", "LOCK_ID")
    if not holder.get("stale"):
        who = f"engine pid {holder['pid']} on {holder['host']}, " if holder.get("pid") else ""
        raise ConfigError(
            f"stack {stack!r} is locked by a live PostgreSQL session ({who}backend pid {holder.get('backend_pid')}): "
            f"an advisory lock cannot be broken from another session; it is released the moment that session ends "
            f"(stop that engine, or as a database administrator: select pg_terminate_backend({holder.get('backend_pid')}))",
            "LOCK_ID")
    with state.write():
        state._x("delete from locks where stack = ? and lock_id = ?", [stack, lock_id])
    return holder
