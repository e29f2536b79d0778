"""One lock per stack: an OS file lock on a sidecar file, so it dies with its process.

The holder writes who it is (pid, host, operation, start, lock id) into the file it locks,
so a second engine can name it. ``unlock`` unlinks the file: the next engine locks a fresh
inode, and an acquirer that raced the unlink notices the inode changed and tries again.
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
