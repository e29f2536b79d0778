"""The state database: runs, resources and the write-ahead journal, in one SQLite file or one
PostgreSQL schema (``--state postgresql://user@host:port/db?schema=...``).

Every mutation is its own committed transaction, so a ``kill -9`` at any instant leaves
either the row before or the row after. A journal intent is committed *before* its provider
call (``apply`` relies on that): an open intent whose run is dead is work to recover.

This module is storage only. Resource rows and journal intents are written by one caller,
``engine.snapshot.SnapshotManager``, so that every rule about what the rows mean (a replaced
copy kept until deleted, a delete removing only the copy it deleted) lives in one place.

Schema 2 adds ``pending_deletes``: the old copy of a create-before-delete replacement, kept
recorded from the moment its replacement exists until its own delete has succeeded.
Schema 3 adds ``host`` to resources, pending deletes and journal intents: the machine that
recorded them (a local process belongs to the host that started it).
Schema 4 adds ``stack_usage``: when a run last used each stack's reusable resources. A reusable
resource's last use is the later of its own row's ``last_used`` and its stack's, so a run that
reuses 100,000 resources records that in one row instead of rewriting 100,000.
Commits are ``synchronous=FULL`` in SQLite and ``synchronous_commit=on`` in PostgreSQL: a
committed intent survives a power cut, not only a crash.

The two backends share the schema, the SQL (written with ``?`` placeholders, ``%s`` for
psycopg) and every method; they differ in the upsert, the journal's sequence, the
transaction (``begin immediate`` / psycopg's ``transaction()``) and the read-only view.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import socket

import sqlite_utils

from . import gcpause
from .errors import EngineError, StateError
from .lock import lock_dir
from .pgstate import PgTarget, is_url, parse as parse_url
from .resource import DEFAULT_OPTIONS, Options, Record

SCHEMA_VERSION = 4
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_PATH = Path(".engine") / "state.db"

def locate(value: "str | os.PathLike | PgTarget | None" = None) -> "Path | PgTarget":
    """Where a state lives: a PostgreSQL URL, or a file path (default ``$ENGINE_STATE``, else
    ``.engine/state.db``)."""
    if isinstance(value, PgTarget):
        return value
    if value is None or value == "":
        value = os.environ.get("ENGINE_STATE") or DEFAULT_PATH
    if isinstance(value, str) and is_url(value):
        return parse_url(value)
    return Path(value)


def default_path() -> "Path | PgTarget":
    return locate(None)


def runtime_dir(location: "Path | PgTarget") -> Path:
    """Where providers keep local files for this state: beside a state file, else the target's
    (``$ENGINE_RUNTIME_DIR`` or ``.engine/runtime``)."""
    if isinstance(location, PgTarget):
        return location.runtime_dir
    return Path(location).resolve().parent / "runtime"


def this_host() -> str:
    """The host name this engine records (``$ENGINE_HOSTNAME``, else the machine's)."""
    return os.environ.get("ENGINE_HOSTNAME") or socket.gethostname()


class StateLost(EngineError):
    """The connection to a PostgreSQL state broke mid-command: what was committed stays, the
    next command on the stack recovers the rest."""


def _redact(text: str | None) -> str | None:
    """Every error text the state keeps passes the one redactor (engine.secrets)."""
    if not text:
        return text
    from .secrets import redact_text

    return redact_text(text)


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


_raw_decode = json.JSONDecoder().raw_decode


def _loads(text: str) -> Any:
    """``json.loads`` of a text ``_dumps`` wrote (no whitespace around it), without the two
    whitespace regex matches ``loads`` makes per call: a plan of 100,000 decodes 200,000 texts.
    Anything else (surrounding whitespace, trailing data) goes to ``loads``, which decides."""
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


@functools.lru_cache(maxsize=256)
def _options_cached(text: str) -> Options:
    options = Options.from_dict(json.loads(text))
    return DEFAULT_OPTIONS if options == DEFAULT_OPTIONS else options


def _options(text: str | None) -> Options:
    """Options rows repeat (most are the defaults): parse each distinct one once. Options is
    frozen, so sharing one instance between records is safe; the defaults are the very instance
    declarations share, so the plan's comparison of the two is one identity check."""
    return _options_cached(text or "{}")


def _later(own: float | None, stack: float | None) -> float | None:
    """A reusable resource's last use: its row's own or its stack's (schema 4), the later."""
    if stack is None:
        return own
    return stack if own is None or stack > own else own


def _oldest_first(rec: Record) -> tuple:
    """Records by ``created`` (NULL first), then URN and id."""
    return rec.created or 0.0, rec.urn, rec.id


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
    "ephemeral integer, run_id text, parent text, idle_ttl float, last_used float, created float, host text"
)


# The resource columns in the order ``State.resources`` reads them (``host`` is appended: a
# read-only view of an older file lacks it).
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
                "error text, reason text, decl text, host text)"),
    "pending_deletes": f"create {{kind}} table if not exists {{name}} ({_RESOURCE_COLUMNS}, primary key (urn, id))",
    "stack_usage": "create {kind} table if not exists {name} (stack text primary key, last_used float)",
}
_INDEXES = (
    "create index if not exists idx_runs_stack_status on runs (stack, status)",
    "create index if not exists idx_resources_stack on resources (stack)",
    "create index if not exists idx_journal_stack_status on journal (stack, status)",
    "create index if not exists idx_pending_deletes_stack on pending_deletes (stack)",
)
# The tables ``engine state migrate`` copies, with the columns that identify a row.
COPIED = {"runs": ("run_id",), "resources": ("urn",), "pending_deletes": ("urn", "id"), "journal": ("seq",),
          "stack_usage": ("stack",)}
_PK = {**COPIED, "meta": ("key",), "locks": ("stack",)}
# PostgreSQL only: who holds each stack's advisory lock (for the error message and unlock).
_PG_LOCKS = ("create table if not exists locks (stack text primary key, lock_id text, pid bigint, host text, "
             "operation text, started text, backend_pid bigint)")


def _pg_ddl(sql: str) -> str:
    """SQLite's DDL in PostgreSQL's types; the journal's seq an identity that accepts given values (migrate)."""
    return (sql.replace("seq integer primary key", "seq bigint generated by default as identity primary key")
            .replace(" float", " double precision").replace(" integer", " bigint")
            .replace("[key]", "key").replace("[value]", "value"))


_IDLE_MAX = 4


def _psycopg_errors():
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite only
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError)


class State:
    """One open state database. Thread-safe: apply calls it from its worker threads.

    ``State.shared(path)`` keeps one SQLite connection per file for the life of the process:
    opening and closing per run would cost a WAL creation and a checkpoint, four fsyncs, each
    time. A PostgreSQL state gets a connection per operation instead: the stack's advisory lock
    is taken on it (``engine.lock.PgStackLock``), so the lock and every write of the operation
    live and die with one database session.
    """

    _shared: dict[tuple[int, str], "State"] = {}
    _shared_lock = threading.Lock()
    _idle: dict[tuple, list] = {}  # PostgreSQL sessions this process may reuse, per URL
    pg: PgTarget | None = None
    _has_stack_usage = True  # False only for a read-only PostgreSQL session on a schema before 4

    @classmethod
    def shared(cls, path: "str | os.PathLike | PgTarget | None" = None) -> "State":
        loc = locate(path)
        if isinstance(loc, PgTarget):
            return cls(loc)
        resolved = str(loc.resolve())
        key = (os.getpid(), resolved)
        with cls._shared_lock:
            st = cls._shared.get(key)
            if st is None or not Path(resolved).exists():
                st = cls._shared[key] = cls(resolved)
                st._keep_open = True
            return st

    @classmethod
    def reader(cls, path: "str | os.PathLike | PgTarget") -> "State":
        """A read-only view of an existing file, for commands that only look (preview, ``state
        list``, ``runs``): no lock, no migration, and SQLite refuses any write. A table that an
        older (or empty) file lacks reads as empty, from a stand-in in the connection's own
        temporary schema, so the file itself is never touched. For PostgreSQL: a session whose
        transactions are read-only."""
        loc = locate(path)
        self = cls.__new__(cls)
        self._keep_open = False
        self._mutex = threading.RLock()
        self._broken = None
        self.held_locks = set()
        if isinstance(loc, PgTarget):
            self._open_pg(loc, read_only=True)
            return self
        self.path = loc
        _validate_existing(self.path)
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30,
                               isolation_level=None)
        conn.execute("pragma busy_timeout=30000")
        present = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        for table, ddl in _TABLES.items():
            if table not in present:
                conn.execute(ddl.format(kind="temp", name=table))
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._host_column = {t: "host" if "host" in {r[1] for r in conn.execute(f"pragma table_info({t})")} else "null"
                             for t in ("resources", "pending_deletes")}
        return self

    def __init__(self, path: "str | os.PathLike | PgTarget | None" = None):
        self._keep_open = False
        self._mutex = threading.RLock()
        self._broken = None
        self.held_locks: set[int] = set()  # advisory locks held on this session (PostgreSQL)
        self._host_column = {"resources": "host", "pending_deletes": "host"}
        loc = locate(path)
        if isinstance(loc, PgTarget):
            self._open_pg(loc, read_only=False)
            return
        self.path = loc
        if self.path.exists():
            _validate_existing(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self.conn = conn
            self.db = sqlite_utils.Database(conn)
            self._migrate()
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ PostgreSQL
    def _open_pg(self, target: PgTarget, read_only: bool) -> None:
        """A session from this process's idle ones (a connection costs a TCP and SCRAM handshake,
        most of a trivial run's time), else a new one; its schema version checked either way."""
        from .pgstate import connect

        self.pg = self.path = target
        self._host_column = {"resources": "host", "pending_deletes": "host"}
        self._pool_key = (os.getpid(), target.conninfo, target.schema, read_only)
        with State._shared_lock:
            idle = State._idle.get(self._pool_key)
            self.conn = idle.pop() if idle else None
        version = -1
        if self.conn is not None:
            try:
                version = self._pg_version()
            except _psycopg_errors():  # it died idle (the server restarted): a new one
                self.conn.close()
                self.conn = None
        if self.conn is None:
            self.conn = connect(target, read_only=read_only)
        try:
            if version == -1:
                version = self._pg_version()
            if version is not None and version > SCHEMA_VERSION:
                raise StateError(f"PostgreSQL state {target} has schema version {version}, newer than this engine's "
                                 f"{SCHEMA_VERSION}; upgrade taskrig (the schema was left untouched)")
            if version is None and read_only:
                raise StateError(f"PostgreSQL state {target}: schema {target.schema!r} holds no engine state")
            if not read_only and version != SCHEMA_VERSION:
                self._pg_migrate(version)
            # A read-only session on an older schema (never migrated) has no stack_usage to read.
            self._has_stack_usage = not read_only or (version or 0) >= 4
        except BaseException:
            self.conn.close()
            raise

    def _pg_version(self) -> int | None:
        """The schema's version; None when it holds no state (no meta table)."""
        schema = self.pg.schema
        tables = {r[0] for r in self.conn.execute(
            "select tablename from pg_catalog.pg_tables where schemaname = %s", [schema]).fetchall()}
        if not tables:
            return None
        if "meta" not in tables:
            raise StateError(f"PostgreSQL state {self.pg}: schema {schema!r} has tables but no engine state "
                             f"(no meta table; left untouched)")
        row = self.conn.execute("select value from meta where key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _pg_migrate(self, version: int | None) -> None:
        """Create the schema and its tables in one transaction, engines taking turns on an
        advisory transaction lock (two creating one schema at once would collide)."""
        schema = self.pg.schema
        with self._tx():
            self.conn.execute("select pg_advisory_xact_lock(%s)", [self.pg.lock_key("\0schema")])
            version = self._pg_version()  # again, under the lock: another engine may have created it
            if version == SCHEMA_VERSION:
                return
            if version is None:
                self.conn.execute(f'create schema if not exists "{schema}"')
                version = 0
            if version > SCHEMA_VERSION:
                raise StateError(f"PostgreSQL state {self.pg} has schema version {version}, newer than this engine's")
            # PostgreSQL states started at schema 3: every table at once, and each later schema's
            # new tables are created here the same way (``if not exists``).
            for table, ddl in _TABLES.items():
                self.conn.execute(_pg_ddl(ddl.format(kind="", name=table)))
            self.conn.execute(_PG_LOCKS)
            for ddl in _INDEXES:
                self.conn.execute(ddl)
            self._insert("meta", {"key": "schema_version", "value": str(SCHEMA_VERSION)})

    def _lost(self, e: BaseException) -> StateLost:
        from .secrets import redact_text

        self._broken = self._broken or redact_text(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        return StateLost(f"lost the connection to the PostgreSQL state {self.pg}: {self._broken} "
                         f"(what was committed stays recorded; the next command on the stack recovers the rest)")

    # ------------------------------------------------------------------ SQL, both dialects
    def _x(self, sql: str, args: Iterable = ()):
        """Execute one statement (``?`` placeholders) on this state's connection."""
        if self.pg is None:
            return self.conn.execute(sql, list(args))
        if self._broken:
            raise self._lost(RuntimeError(self._broken))
        try:
            return self.conn.execute(sql.replace("?", "%s"), list(args))
        except _psycopg_errors() as e:
            raise self._lost(e) from None

    def _dicts(self, sql: str, args: Iterable = ()) -> list[dict]:
        with self._mutex:
            cur = self._x(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

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
                for ddl in _INDEXES[:3]:
                    db.execute(ddl)
            if version < 2:
                db.execute(_TABLES["pending_deletes"].format(kind="", name="pending_deletes"))
                db.execute(_INDEXES[3])
            if version < 3:
                # The host that recorded a row: for rows an older engine wrote, the host of the run
                # that wrote them (a reusable resource's run is unknown: any host may act on it).
                for table in ("resources", "pending_deletes", "journal"):
                    if "host" not in {r[1] for r in db.execute(f"pragma table_info({table})")}:
                        db.execute(f"alter table {table} add column host text")
                    db.execute(f"update {table} set host = (select runs.host from runs where runs.run_id = {table}.run_id) "
                               f"where host is null and run_id is not null")
            if version < 4:
                # Older rows keep their own last_used: with no stack row yet, that is their last use.
                db.execute(_TABLES["stack_usage"].format(kind="", name="stack_usage"))
            db.execute("insert or replace into meta (key, value) values ('schema_version', ?)", [str(SCHEMA_VERSION)])

    def _tx(self):
        state = self

        class _Tx:
            def __enter__(self_inner):
                state._mutex.acquire()
                if state.pg is None:
                    try:
                        state.conn.execute("begin immediate")
                    except BaseException:
                        state._mutex.release()
                        raise
                    return
                self_inner.t = None
                try:
                    if state._broken:
                        raise state._lost(RuntimeError(state._broken))
                    self_inner.t = state.conn.transaction()
                    self_inner.t.__enter__()
                except _psycopg_errors() as e:
                    state._mutex.release()
                    raise state._lost(e) from None
                except BaseException:
                    state._mutex.release()
                    raise

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    if state.pg is None:
                        state.conn.execute("commit" if exc_type is None else "rollback")
                        return
                    try:
                        self_inner.t.__exit__(exc_type, exc, tb)
                    except _psycopg_errors() as e:
                        if exc_type is None or not isinstance(exc, StateLost):
                            raise state._lost(e) from None
                finally:
                    state._mutex.release()

        return _Tx()

    def close(self) -> None:
        """SQLite: close (a shared state stays open). PostgreSQL: the session goes back to this
        process's idle ones once every advisory lock on it is released, else it is closed."""
        if self._keep_open:
            return
        if self.pg is not None and not self._broken and not self.conn.closed:
            try:
                from psycopg.pq import TransactionStatus

                if self.conn.info.transaction_status == TransactionStatus.IDLE:
                    self.conn.execute("select pg_advisory_unlock_all()")  # never a lock into the next operation
                    self.held_locks.clear()
                    with State._shared_lock:
                        idle = State._idle.setdefault(self._pool_key, [])
                        if len(idle) < _IDLE_MAX:
                            idle.append(self.conn)
                            self._broken = "this State was closed"  # done with the session it lent
                            return
            except Exception:  # noqa: BLE001 - not reusable: closed below
                pass
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - a broken PostgreSQL session closes anyway
            pass

    # ------------------------------------------------------------------ runs
    def start_run(self, run_id: str, stack: str, task: str, inputs: Any = None, parent_run: str | None = None,
                  kind: str = "task", status: str = "provisioning") -> None:
        with self._tx():
            self._insert("runs", {
                "run_id": run_id, "stack": stack, "task": task, "status": status, "started": time.time(),
                "finished": None, "error": None, "pid": os.getpid(), "host": this_host(),
                "parent_run": parent_run, "inputs": _redact(_dumps(inputs)), "outputs": None, "kind": kind,
            })

    def update_run(self, run_id: str, **fields: Any) -> None:
        if "outputs" in fields:  # a run record never holds a registered secret (the state URL's password)
            fields["outputs"] = _redact(_dumps(fields["outputs"]))
        if fields.get("error") is not None:
            fields["error"] = _redact(fields["error"])
        with self._tx():
            sets = ", ".join(f'"{k}" = ?' for k in fields)
            self._x(f"update runs set {sets} where run_id = ?", [*fields.values(), run_id])

    def runs(self, stack: str | None = None, status: Iterable[str] | None = None) -> list[dict]:
        where, args = [], []
        if stack is not None:
            where.append("stack = ?"); args.append(stack)
        if status is not None:
            st = list(status)
            where.append(f"status in ({','.join('?' * len(st))})"); args.extend(st)
        sql = "select * from runs" + (f" where {' and '.join(where)}" if where else "") + " order by started"
        return self._dicts(sql + (", run_id" if self.pg else ""), args)

    def run(self, run_id: str) -> dict | None:
        rows = self._dicts("select * from runs where run_id = ?", [run_id])
        return rows[0] if rows else None

    # ------------------------------------------------------------------ resources
    def _records(self, table: str, where: str | None = None, args: list | tuple = (), bulk: bool = True) -> list[Record]:
        """Rows of ``resources`` or ``pending_deletes`` as records, oldest first (by ``created``,
        then URN and id). Plain tuples, not dict rows: a plan of 100,000 reads them all. ``bulk``
        (a whole stack or more) builds them with the garbage collector paused (``engine.gcpause``).
        Sorted here, not in SQL: SQLite's ``order by`` sorts in a temporary B-tree (a third of its
        read at 100,000 rows), PostgreSQL's takes the server a tenth of a second more than
        Python's sort of the records."""
        sql = f"select {_RECORD_SELECT}, {self._host_column[table]} from {table}" + (f" where {where}" if where else "")
        loads, record, options, pending = _loads, Record, _options, table == "pending_deletes"
        with gcpause.paused() if bulk else contextlib.nullcontext():
            with self._mutex:
                # SQLite's rows one at a time (the fetched text never all held at once); psycopg's
                # all at once (its fetchall converts in C, its iteration row by row in Python).
                rows = self._x(sql, args) if self.pg is None else self._x(sql, args).fetchall()
                records = [record(urn=r[0], type=r[1], stack=r[2], id=r[3], inputs=loads(r[4] or "{}"),
                                  outputs=loads(r[5] or "{}"), deps=loads(r[6]) if r[6] not in (None, "[]") else [],
                                  options=options(r[7]), ephemeral=bool(r[8]), run_id=r[9], parent=r[10],
                                  idle_ttl=r[11], last_used=r[12], created=r[13], pending_delete=pending, host=r[14])
                           for r in rows]
                del rows
            records.sort(key=_oldest_first)
            if table == "resources" and not all(r.ephemeral for r in records):
                used = self._stack_usage()
                if used:
                    for r in records:
                        if not r.ephemeral:
                            r.last_used = _later(r.last_used, used.get(r.stack))
            return records

    def _stack_usage(self) -> dict[str, float]:
        """Each stack's last use of its reusable resources (``touch_reusable``), by stack."""
        if not self._has_stack_usage:
            return {}
        with self._mutex:
            return dict(self._x("select stack, last_used from stack_usage").fetchall())

    def resources(self, stack: str | None = None, ephemeral: bool | None = None) -> list[Record]:
        where, args = [], []
        if stack:
            where.append("stack = ?"); args.append(stack)
        if ephemeral is not None:
            where.append("ephemeral = ?"); args.append(int(ephemeral))
        return self._records("resources", " and ".join(where) or None, args)

    def has_reusable(self, stack: str) -> bool:
        with self._mutex:
            return self._x("select 1 from resources where stack = ? and ephemeral = 0 limit 1",
                           [stack]).fetchone() is not None

    def expired(self, stack: str, now: float) -> list[Record]:
        """Reusable resources idle past their TTL (in SQL: a stack may hold thousands), counted
        from their last use: their own row's and the stack's (schema 4), both past."""
        used = self._stack_usage().get(stack) or 0.0
        return self._records(
            "resources", "stack = ? and ephemeral = 0 and idle_ttl > 0 and coalesce(last_used, created, 0) + idle_ttl <= ? "
            "and ? + idle_ttl <= ?", [stack, now, used, now])

    def resource(self, urn: str) -> Record | None:
        rows = self._records("resources", "urn = ?", [urn], bulk=False)
        return rows[0] if rows else None

    def stacks(self) -> list[str]:
        with self._mutex:
            rows = self._x(
                "select stack from resources union select stack from pending_deletes "
                "union select stack from journal where status='open' "
                "union select stack from runs where status in ('provisioning','running','tearing_down')"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def resource_types(self, stack: str) -> list[str]:
        with self._mutex:
            rows = self._x("select type from resources where stack = ? union "
                           "select type from pending_deletes where stack = ?", [stack, stack]).fetchall()
        return sorted(r[0] for r in rows)

    def run_types(self, run_id: str) -> list[str]:
        """The resource types a run journaled: the providers asked about its orphans."""
        with self._mutex:
            rows = self._x("select distinct type from journal where run_id = ?", [run_id]).fetchall()
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
            "created": rec.created or time.time(), "host": rec.host or this_host(),
        })

    def _insert(self, table: str, row: dict) -> None:
        cols = ", ".join(f'"{k}"' for k in row)
        marks = ", ".join("?" * len(row))
        if self.pg is None:
            self._x(f"insert or replace into {table} ({cols}) values ({marks})", row.values())
            return
        pk = _PK[table]
        sets = ", ".join(f'"{k}" = excluded."{k}"' for k in row if k not in pk)
        self._x(f"insert into {table} ({cols}) values ({marks}) on conflict ({', '.join(pk)}) "
                + (f"do update set {sets}" if sets else "do nothing"), row.values())

    def _remove(self, urn: str, id: str | None = None, table: str = "resources") -> int:
        """Delete a row; with ``id``, only if it records that physical thing. Returns rows removed."""
        if id is None:
            return self._x(f"delete from {table} where urn = ?", [urn]).rowcount
        return self._x(f"delete from {table} where urn = ? and id = ?", [urn, id]).rowcount

    def _touch_reusable(self, stack: str, when: float) -> None:
        """One row for the whole stack (schema 4), whatever the number of its resources."""
        self._insert("stack_usage", {"stack": stack, "last_used": when})

    def _journal_insert(self, run_id: str, stack: str, urn: str, type_: str, op: str, name: str,
                        inputs: dict | None, reason: str | None, decl: dict | None) -> int:
        sql = ("insert into journal (run_id, stack, urn, type, op, name, status, inputs, started, reason, decl, host) "
               "values (?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)")
        args = [run_id, stack, urn, type_, op, name, _dumps(inputs), time.time(), reason, _dumps(decl), this_host()]
        if self.pg is not None:
            return self._x(sql + " returning seq", args).fetchone()[0]
        return self._x(sql, args).lastrowid

    def _journal_close(self, seq: int, status: str, error: str | None) -> int:
        """Close an open intent; returns 0 when it was closed already (by recovery)."""
        return self._x("update journal set status = ?, finished = ?, error = ? where seq = ? and status = 'open'",
                       [status, time.time(), _redact(error), seq]).rowcount

    def intent(self, seq: int) -> dict | None:
        rows = self._dicts("select * from journal where seq = ?", [seq])
        return rows[0] if rows else None

    def open_intents(self, stack: str) -> list[dict]:
        return self._dicts("select * from journal where stack = ? and status = 'open' order by seq", [stack])

    def journal(self, stack: str | None = None) -> list[dict]:
        return self._dicts("select * from journal" + (" where stack = ?" if stack else "") + " order by seq",
                           [stack] if stack else [])

    # ------------------------------------------------------------------ engine state migrate
    def table_rows(self, table: str) -> list[dict]:
        """Every row of a copied table, in a stable order (migrate and its verification)."""
        return self._dicts(f"select * from {table} order by {', '.join(COPIED[table])}")

    def is_empty(self) -> bool:
        with self._mutex:
            return all(self._x(f"select 1 from {t} limit 1").fetchone() is None for t in COPIED)
