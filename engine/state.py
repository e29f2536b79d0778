"""The state database: runs, resources and the write-ahead journal, in one SQLite file.

Every mutation is its own committed transaction, so a ``kill -9`` at any instant leaves
either the row before or the row after. A journal intent is committed *before* its provider
call (``apply`` relies on that): an open intent whose run is dead is work to recover.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from .errors import StateError
from .lock import lock_dir
from .resource import Options, Record

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_PATH = Path(".engine") / "state.db"


def default_path() -> Path:
    return Path(os.environ.get("ENGINE_STATE") or DEFAULT_PATH)


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


@functools.lru_cache(maxsize=256)
def _options_cached(text: str) -> Options:
    return Options.from_dict(json.loads(text))


def _options(text: str | None) -> Options:
    """Options rows repeat (most are the defaults): parse each distinct one once. Options is
    frozen, so sharing one instance between records is safe."""
    return _options_cached(text or "{}")


def _validate_existing(path: Path) -> None:
    """Refuse a foreign, unreadable or newer file before any write touches it."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise StateError(f"state file {path} is unreadable: {e.strerror}") from None
    if not head:
        return  # an empty file is an empty database
    if head != SQLITE_MAGIC:
        raise StateError(f"state file {path} is not an SQLite database (left untouched)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
            if tables and "meta" not in tables:
                raise StateError(f"state file {path} is an SQLite database but not an engine state (no meta table; left untouched)")
            if "meta" in tables:
                row = conn.execute("select value from meta where key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StateError(
                        f"state file {path} has schema version {version}, newer than this engine's {SCHEMA_VERSION}; "
                        f"upgrade taskrig (the file was left untouched)"
                    )
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StateError(f"state file {path} is unreadable: {e} (left untouched)") from None


class State:
    """One open state database. Thread-safe: apply calls it from its worker threads.

    ``State.shared(path)`` keeps one connection per file for the life of the process: opening
    and closing per run would cost a WAL creation and a checkpoint, four fsyncs, each time.
    """

    _shared: dict[tuple[int, str], "State"] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, path: str | os.PathLike | None = None) -> "State":
        resolved = str(Path(path or default_path()).resolve())
        key = (os.getpid(), resolved)
        with cls._shared_lock:
            st = cls._shared.get(key)
            if st is None or not Path(resolved).exists():
                st = cls._shared[key] = cls(resolved)
                st._keep_open = True
            return st

    def __init__(self, path: str | os.PathLike | None = None):
        self._keep_open = False
        self.path = Path(path) if path else default_path()
        if self.path.exists():
            _validate_existing(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.RLock()
        # Two engines opening a new file at once would race on the WAL switch and the schema
        # ("database is locked" skips the busy wait there): they take turns on a sidecar lock.
        guard = lock_dir(self.path)
        guard.mkdir(parents=True, exist_ok=True)
        fd = os.open(guard / "schema.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
            conn.execute("pragma busy_timeout=30000")
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            self.db = sqlite_utils.Database(conn)
            self._migrate()
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        # Each create is idempotent so that two processes opening a new file at once both succeed;
        # a current file is not written at all (a refused command leaves it byte-identical).
        db = self.db
        if "meta" in db.table_names():
            row = db.execute("select value from meta where key='schema_version'").fetchone()
            if row and int(row[0]) == SCHEMA_VERSION:
                return
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["runs"].create(
            {"run_id": str, "stack": str, "task": str, "status": str, "started": float,
             "finished": float, "error": str, "pid": int, "host": str, "parent_run": str,
             "inputs": str, "outputs": str, "kind": str},
            pk="run_id", if_not_exists=True,
        )
        db["runs"].create_index(["stack", "status"], if_not_exists=True)
        db["resources"].create(
            {"urn": str, "stack": str, "type": str, "id": str, "inputs": str, "outputs": str,
             "deps": str, "options": str, "ephemeral": int, "run_id": str, "parent": str,
             "idle_ttl": float, "last_used": float, "created": float},
            pk="urn", if_not_exists=True,
        )
        db["resources"].create_index(["stack"], if_not_exists=True)
        db["journal"].create(
            {"seq": int, "run_id": str, "stack": str, "urn": str, "type": str, "op": str,
             "name": str, "status": str, "inputs": str, "started": float, "finished": float,
             "error": str, "reason": str, "decl": str},
            pk="seq", if_not_exists=True,
        )
        db["journal"].create_index(["stack", "status"], if_not_exists=True)
        with self._tx():
            self.db.execute("insert or replace into meta (key, value) values ('schema_version', ?)", [str(SCHEMA_VERSION)])

    def _tx(self):
        state = self

        class _Tx:
            def __enter__(self_inner):
                state._mutex.acquire()
                state.db.execute("begin immediate")

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    state.db.execute("commit" if exc_type is None else "rollback")
                finally:
                    state._mutex.release()

        return _Tx()

    def close(self) -> None:
        if not self._keep_open:
            self.db.conn.close()

    # ------------------------------------------------------------------ runs
    def start_run(self, run_id: str, stack: str, task: str, inputs: Any = None, parent_run: str | None = None,
                  kind: str = "task", status: str = "provisioning") -> None:
        import socket

        with self._tx():
            self._insert("runs", {
                "run_id": run_id, "stack": stack, "task": task, "status": status, "started": time.time(),
                "finished": None, "error": None, "pid": os.getpid(), "host": socket.gethostname(),
                "parent_run": parent_run, "inputs": _dumps(inputs), "outputs": None, "kind": kind,
            })

    def update_run(self, run_id: str, **fields: Any) -> None:
        if "outputs" in fields:
            fields["outputs"] = _dumps(fields["outputs"])
        with self._tx():
            sets = ", ".join(f"[{k}] = ?" for k in fields)
            self.db.execute(f"update runs set {sets} where run_id = ?", [*fields.values(), run_id])

    def runs(self, stack: str | None = None, status: Iterable[str] | None = None) -> list[dict]:
        where, args = [], []
        if stack is not None:
            where.append("stack = ?"); args.append(stack)
        if status is not None:
            st = list(status)
            where.append(f"status in ({','.join('?' * len(st))})"); args.extend(st)
        with self._mutex:
            return list(self.db["runs"].rows_where(" and ".join(where) or None, args, order_by="started"))

    def run(self, run_id: str) -> dict | None:
        with self._mutex:
            rows = list(self.db["runs"].rows_where("run_id = ?", [run_id]))
        return rows[0] if rows else None

    # ------------------------------------------------------------------ resources
    @staticmethod
    def _record(row: dict) -> Record:
        return Record(
            urn=row["urn"], type=row["type"], stack=row["stack"], id=row["id"],
            inputs=json.loads(row["inputs"] or "{}"), outputs=json.loads(row["outputs"] or "{}"),
            deps=json.loads(row["deps"]) if row["deps"] not in (None, "[]") else [],
            options=_options(row["options"]),
            ephemeral=bool(row["ephemeral"]), run_id=row["run_id"], parent=row["parent"],
            idle_ttl=row["idle_ttl"], last_used=row["last_used"], created=row["created"],
        )

    def resources(self, stack: str | None = None, ephemeral: bool | None = None) -> list[Record]:
        where, args = [], []
        if stack:
            where.append("stack = ?"); args.append(stack)
        if ephemeral is not None:
            where.append("ephemeral = ?"); args.append(int(ephemeral))
        with self._mutex:
            rows = self.db["resources"].rows_where(" and ".join(where) or None, args, order_by="created")
            return [self._record(r) for r in rows]

    def has_reusable(self, stack: str) -> bool:
        with self._mutex:
            return self.db.execute("select 1 from resources where stack = ? and ephemeral = 0 limit 1",
                                   [stack]).fetchone() is not None

    def expired(self, stack: str, now: float) -> list[Record]:
        """Reusable resources idle past their TTL (in SQL: a stack may hold thousands)."""
        with self._mutex:
            rows = self.db["resources"].rows_where(
                "stack = ? and ephemeral = 0 and idle_ttl > 0 and coalesce(last_used, created, 0) + idle_ttl <= ?",
                [stack, now], order_by="created")
            return [self._record(r) for r in rows]

    def resource(self, urn: str) -> Record | None:
        with self._mutex:
            rows = list(self.db["resources"].rows_where("urn = ?", [urn]))
        return self._record(rows[0]) if rows else None

    def stacks(self) -> list[str]:
        with self._mutex:
            rows = self.db.execute(
                "select stack from resources union select stack from journal where status='open' "
                "union select stack from runs where status in ('provisioning','running','tearing_down')"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def run_types(self, run_id: str) -> list[str]:
        """The resource types a run journaled: the providers asked about its orphans."""
        with self._mutex:
            rows = self.db.execute("select distinct type from journal where run_id = ?", [run_id]).fetchall()
        return sorted(r[0] for r in rows)

    def put_resource(self, rec: Record) -> None:
        with self._tx():
            self._put(rec)

    def _put(self, rec: Record) -> None:
        self._insert("resources", {
            "urn": rec.urn, "stack": rec.stack, "type": rec.type, "id": rec.id,
            "inputs": _dumps(rec.inputs), "outputs": _dumps(rec.outputs), "deps": _dumps(rec.deps),
            "options": _dumps(rec.options.to_dict()), "ephemeral": int(rec.ephemeral), "run_id": rec.run_id,
            "parent": rec.parent, "idle_ttl": rec.idle_ttl, "last_used": rec.last_used,
            "created": rec.created or time.time(),
        })

    def _insert(self, table: str, row: dict) -> None:
        cols = ", ".join(f"[{k}]" for k in row)
        self.db.execute(f"insert or replace into {table} ({cols}) values ({', '.join('?' * len(row))})",
                        list(row.values()))

    def remove_resource(self, urn: str) -> None:
        with self._tx():
            self.db.execute("delete from resources where urn = ?", [urn])

    def touch_reusable(self, stack: str, when: float | None = None) -> None:
        """A run used the stack's reusable resources: their idle clock starts again."""
        with self._tx():
            self.db.execute("update resources set last_used = ? where stack = ? and ephemeral = 0",
                            [when or time.time(), stack])

    # ------------------------------------------------------------------ journal
    def journal_open(self, run_id: str, stack: str, urn: str, type_: str, op: str, name: str,
                     inputs: dict | None = None, reason: str | None = None, decl: dict | None = None) -> int:
        """Commit an intent before its provider call; ``decl`` is what recovery needs to adopt it."""
        with self._tx():
            cur = self.db.execute(
                "insert into journal (run_id, stack, urn, type, op, name, status, inputs, started, reason, decl) "
                "values (?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)",
                [run_id, stack, urn, type_, op, name, _dumps(inputs), time.time(), reason, _dumps(decl)],
            )
            return cur.lastrowid

    def journal_close(self, seq: int, status: str = "done", error: str | None = None,
                      record: Record | None = None, remove_urn: str | None = None) -> None:
        """Close an intent; the resource row changes in the same transaction."""
        with self._tx():
            if record is not None:
                self._put(record)
            if remove_urn is not None:
                self.db.execute("delete from resources where urn = ?", [remove_urn])
            self.db.execute("update journal set status = ?, finished = ?, error = ? where seq = ?",
                            [status, time.time(), error, seq])

    def open_intents(self, stack: str) -> list[dict]:
        with self._mutex:
            return list(self.db["journal"].rows_where("stack = ? and status = 'open'", [stack], order_by="seq"))

    def journal(self, stack: str | None = None) -> list[dict]:
        with self._mutex:
            return list(self.db["journal"].rows_where("stack = ?" if stack else None,
                                                      [stack] if stack else [], order_by="seq"))
