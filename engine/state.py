"""The state database: runs, resources and the write-ahead journal, in one SQLite file.

Every mutation is its own committed transaction, so a ``kill -9`` at any instant leaves
either the row before or the row after. A journal intent is committed *before* its provider
call (``apply`` relies on that): an open intent whose run is dead is work to recover.

This module is storage only. Resource rows and journal intents are written by one caller,
``engine.snapshot.SnapshotManager``, so that every rule about what the rows mean (a replaced
copy kept until deleted, a delete removing only the copy it deleted) lives in one place.

Schema 2 adds ``pending_deletes``: the old copy of a create-before-delete replacement, kept
recorded from the moment its replacement exists until its own delete has succeeded.
Commits are ``synchronous=FULL``: a committed intent survives a power cut, not only a crash.
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

SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_PATH = Path(".engine") / "state.db"


def default_path() -> Path:
    return Path(os.environ.get("ENGINE_STATE") or DEFAULT_PATH)


def _redact(text: str | None) -> str | None:
    """Every error text the state keeps passes the one redactor (engine.secrets)."""
    if not text:
        return text
    from .secrets import redact_text

    return redact_text(text)


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


_RESOURCE_COLUMNS = (
    "urn text, stack text, type text, id text, inputs text, outputs text, deps text, options text, "
    "ephemeral integer, run_id text, parent text, idle_ttl float, last_used float, created float"
)


# The resource columns in the order ``State.resources`` reads them.
_RECORD_SELECT = ("urn, type, stack, id, inputs, outputs, deps, options, ephemeral, run_id, parent, idle_ttl, "
                  "last_used, created")

# Every table at the current schema; ``kind`` is "" or "temp" (a read-only view's empty stand-ins).
_TABLES = {
    "meta": "create {kind} table if not exists {name} ([key] text primary key, [value] text)",
    "runs": ("create {kind} table if not exists {name} (run_id text primary key, stack text, task text, status text, "
             "started float, finished float, error text, pid integer, host text, parent_run text, "
             "inputs text, outputs text, kind text)"),
    "resources": f"create {{kind}} table if not exists {{name}} ({_RESOURCE_COLUMNS}, primary key (urn))",
    "journal": ("create {kind} table if not exists {name} (seq integer primary key, run_id text, stack text, urn text, "
                "type text, op text, name text, status text, inputs text, started float, finished float, "
                "error text, reason text, decl text)"),
    "pending_deletes": f"create {{kind}} table if not exists {{name}} ({_RESOURCE_COLUMNS}, primary key (urn, id))",
}


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

    @classmethod
    def reader(cls, path: str | os.PathLike) -> "State":
        """A read-only view of an existing file, for commands that only look (preview, ``state
        list``, ``runs``): no lock, no migration, and SQLite refuses any write. A table that an
        older (or empty) file lacks reads as empty, from a stand-in in the connection's own
        temporary schema, so the file itself is never touched."""
        self = cls.__new__(cls)
        self._keep_open = False
        self.path = Path(path)
        _validate_existing(self.path)
        self._mutex = threading.RLock()
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30,
                               isolation_level=None)
        conn.execute("pragma busy_timeout=30000")
        present = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        for table, ddl in _TABLES.items():
            if table not in present:
                conn.execute(ddl.format(kind="temp", name=table))
        self.db = sqlite_utils.Database(conn)
        return self

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
            # FULL: a committed intent survives a power cut. The benchmarks measure its cost against
            # NORMAL with this variable (bench/bench_overhead.py); nothing else should set it.
            sync = os.environ.get("TASKRIG_SQLITE_SYNCHRONOUS", "full").lower()
            if sync not in ("full", "normal"):
                raise StateError(f"TASKRIG_SQLITE_SYNCHRONOUS={sync!r}: expected full or normal")
            conn.execute(f"pragma synchronous={sync}")
            self.db = sqlite_utils.Database(conn)
            self._migrate()
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        """Create a new file at the current schema, or carry an older one forward in one
        transaction (a crash mid-way leaves the old version intact). A current file is not
        written at all, so a refused command leaves it byte-identical."""
        db = self.db
        version = 0
        if "meta" in db.table_names():
            row = db.execute("select value from meta where key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version == SCHEMA_VERSION:
            return
        with self._tx():
            # Idempotent creates: two processes opening a new file at once both succeed.
            db.execute(_TABLES["meta"].format(kind="", name="meta"))
            if version < 1:
                for table in ("runs", "resources", "journal"):
                    db.execute(_TABLES[table].format(kind="", name=table))
                db.execute("create index if not exists idx_runs_stack_status on runs (stack, status)")
                db.execute("create index if not exists idx_resources_stack on resources (stack)")
                db.execute("create index if not exists idx_journal_stack_status on journal (stack, status)")
            if version < 2:
                db.execute(_TABLES["pending_deletes"].format(kind="", name="pending_deletes"))
                db.execute("create index if not exists idx_pending_deletes_stack on pending_deletes (stack)")
            db.execute("insert or replace into meta (key, value) values ('schema_version', ?)", [str(SCHEMA_VERSION)])

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
        if fields.get("error") is not None:
            fields["error"] = _redact(fields["error"])
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
    def _records(self, table: str, where: str | None = None, args: list | tuple = ()) -> list[Record]:
        """Rows of ``resources`` or ``pending_deletes`` as records, oldest first. Plain tuples,
        not sqlite_utils' dict rows: a plan of 100,000 reads them all."""
        sql = f"select {_RECORD_SELECT} from {table}" + (f" where {where}" if where else "") + " order by created"
        with self._mutex:
            rows = self.db.conn.execute(sql, list(args)).fetchall()
        loads, record, options, pending = json.loads, Record, _options, table == "pending_deletes"
        return [record(urn=r[0], type=r[1], stack=r[2], id=r[3], inputs=loads(r[4] or "{}"),
                       outputs=loads(r[5] or "{}"), deps=loads(r[6]) if r[6] not in (None, "[]") else [],
                       options=options(r[7]), ephemeral=bool(r[8]), run_id=r[9], parent=r[10], idle_ttl=r[11],
                       last_used=r[12], created=r[13], pending_delete=pending)
                for r in rows]

    def resources(self, stack: str | None = None, ephemeral: bool | None = None) -> list[Record]:
        where, args = [], []
        if stack:
            where.append("stack = ?"); args.append(stack)
        if ephemeral is not None:
            where.append("ephemeral = ?"); args.append(int(ephemeral))
        return self._records("resources", " and ".join(where) or None, args)

    def has_reusable(self, stack: str) -> bool:
        with self._mutex:
            return self.db.execute("select 1 from resources where stack = ? and ephemeral = 0 limit 1",
                                   [stack]).fetchone() is not None

    def expired(self, stack: str, now: float) -> list[Record]:
        """Reusable resources idle past their TTL (in SQL: a stack may hold thousands)."""
        return self._records(
            "resources", "stack = ? and ephemeral = 0 and idle_ttl > 0 and coalesce(last_used, created, 0) + idle_ttl <= ?",
            [stack, now])

    def resource(self, urn: str) -> Record | None:
        rows = self._records("resources", "urn = ?", [urn])
        return rows[0] if rows else None

    def stacks(self) -> list[str]:
        with self._mutex:
            rows = self.db.execute(
                "select stack from resources union select stack from pending_deletes "
                "union select stack from journal where status='open' "
                "union select stack from runs where status in ('provisioning','running','tearing_down')"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def resource_types(self, stack: str) -> list[str]:
        with self._mutex:
            rows = self.db.execute("select type from resources where stack = ? union "
                                   "select type from pending_deletes where stack = ?", [stack, stack]).fetchall()
        return sorted(r[0] for r in rows)

    def run_types(self, run_id: str) -> list[str]:
        """The resource types a run journaled: the providers asked about its orphans."""
        with self._mutex:
            rows = self.db.execute("select distinct type from journal where run_id = ?", [run_id]).fetchall()
        return sorted(r[0] for r in rows)

    def pending_deletes(self, stack: str | None = None) -> list[Record]:
        """Old copies of replaced resources whose delete has not succeeded yet."""
        return self._records("pending_deletes", "stack = ?" if stack else None, [stack] if stack else [])

    # ------------------------------------------------------------------ writes (SnapshotManager only)
    def write(self):
        """One transaction; the ``_``-methods below are called inside it."""
        return self._tx()

    def _put(self, rec: Record, table: str = "resources") -> None:
        self._insert(table, {
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

    def _remove(self, urn: str, id: str | None = None, table: str = "resources") -> int:
        """Delete a row; with ``id``, only if it records that physical thing. Returns rows removed."""
        if id is None:
            return self.db.execute(f"delete from {table} where urn = ?", [urn]).rowcount
        return self.db.execute(f"delete from {table} where urn = ? and id = ?", [urn, id]).rowcount

    def _touch_reusable(self, stack: str, when: float) -> None:
        self.db.execute("update resources set last_used = ? where stack = ? and ephemeral = 0", [when, stack])

    def _journal_insert(self, run_id: str, stack: str, urn: str, type_: str, op: str, name: str,
                        inputs: dict | None, reason: str | None, decl: dict | None) -> int:
        cur = self.db.execute(
            "insert into journal (run_id, stack, urn, type, op, name, status, inputs, started, reason, decl) "
            "values (?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)",
            [run_id, stack, urn, type_, op, name, _dumps(inputs), time.time(), reason, _dumps(decl)],
        )
        return cur.lastrowid

    def _journal_close(self, seq: int, status: str, error: str | None) -> int:
        """Close an open intent; returns 0 when it was closed already (by recovery)."""
        return self.db.execute("update journal set status = ?, finished = ?, error = ? where seq = ? and status = 'open'",
                               [status, time.time(), _redact(error), seq]).rowcount

    def intent(self, seq: int) -> dict | None:
        with self._mutex:
            rows = list(self.db["journal"].rows_where("seq = ?", [seq]))
        return rows[0] if rows else None

    def open_intents(self, stack: str) -> list[dict]:
        with self._mutex:
            return list(self.db["journal"].rows_where("stack = ? and status = 'open'", [stack], order_by="seq"))

    def journal(self, stack: str | None = None) -> list[dict]:
        with self._mutex:
            return list(self.db["journal"].rows_where("stack = ?" if stack else None,
                                                      [stack] if stack else [], order_by="seq"))
