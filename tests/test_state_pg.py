"""The PostgreSQL state against a real server (scripts/postgres.sh, one per session): URLs and
their errors, the password kept secret, advisory locks (held, dead holder, unlock), 8 engines on
4 stacks at once, recovery across hosts, one reaper acting at a time, the server restarted
mid-run, and ``state migrate`` SQLite -> PostgreSQL -> SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TASKS, wait_for
from pg_fixture import pg_connect, pg_ctl, state_url_for

CLI = "import pg_tasks; from engine.cli import main; main()"
TARGET = "pg_tasks"
ONE_THING = json.dumps([{"name": "job", "inputs": {"size": 1}, "reusable": False}])


class PgCli:
    """The real CLI with the tests' providers imported, on one PostgreSQL state."""

    def __init__(self, engine, url: str, postgres: dict):
        self.engine, self.url, self.postgres = engine, url, postgres
        self.schema = url.rsplit("schema=", 1)[1]
        self.store = engine.cwd / "store"
        self.env = {**engine.env, "ENGINE_STATE": url, "STORE_DIR": str(self.store), "STORE_SPEC": ONE_THING,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(TASKS), engine.env.get("PYTHONPATH")]))}

    def _cmd(self, args):
        return [sys.executable, "-c", CLI, *args]

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self._cmd(args), cwd=self.engine.cwd, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **env})

    def spawn(self, *args: str, **env: str) -> subprocess.Popen:
        p = subprocess.Popen(self._cmd(args), cwd=self.engine.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**self.env, **env}, start_new_session=True)
        self.engine.spawned.append(p)  # killed by pid at the test's end if still running
        return p

    def rows(self, sql: str, args=()) -> list[tuple]:
        with pg_connect(self.postgres) as conn:
            conn.execute(f'set search_path to "{self.schema}"')
            return conn.execute(sql, args).fetchall()

    def live(self) -> list[str]:
        folder = self.store / "objects"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


@pytest.fixture
def pgcli(engine, pg_state, postgres):
    engine.use_state(pg_state, postgres)
    return PgCli(engine, pg_state, postgres)


def _assert_clean(pgcli):
    assert pgcli.live() == []
    assert pgcli.rows("select count(*) from resources") == [(0,)]
    assert pgcli.rows("select count(*) from pending_deletes") == [(0,)]
    assert pgcli.rows("select seq, op, urn from journal where status = 'open'") == []


# ---------------------------------------------------------------------------------- URLs and secrets
@pytest.mark.parametrize("url,needle", [
    ("postgresql://u@127.0.0.1:99999/db", "port '99999' is not a number from 1 to 65535"),
    ("postgresql://u@127.0.0.1:abc/db", "port 'abc' is not a number"),
    ("postgresql://u@127.0.0.1/db?schema=no-dash", "schema 'no-dash' is not a plain identifier"),
    ("postgresql://u@127.0.0.1/db?schema=a&schema=b", "schema is given more than once"),
    ("postgresql://u@127.0.0.1/db?sslmod=require", 'invalid URI query parameter: "sslmod"'),
    ("postgresql://u:hunter2pw@127.0.0.1:1/db", "cannot connect to the PostgreSQL state postgresql://u:***@127.0.0.1:1/db"),
])
def test_a_bad_url_names_what_is_wrong_and_never_the_password(engine, url, needle):
    r = engine("runs", "--state", url)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "hunter2pw" not in r.stderr + r.stdout


def test_password_is_masked_and_libpq_finds_it_in_pgpassword_pgpass_and_passfile(pgcli, postgres, tmp_path):
    pw = postgres["password"]
    r = pgcli("up", f"{TARGET}:hold_0", "-i", "seconds=0")
    assert r.returncode == 0, r.stderr
    # A task that fails with the URL in its error: the runs record and stderr show it masked.
    r = pgcli("up", f"{TARGET}:leak", "-i", f"text={pgcli.url}")
    assert r.returncode == 1
    assert "cannot reach postgresql://taskrig:[secret]@" in r.stderr
    runs = pgcli.rows("select error from runs where task = 'pg_plain.leak'")
    assert runs and "[secret]" in runs[0][0], runs
    everything = json.dumps(pgcli.rows("select * from runs")) + json.dumps(pgcli.rows("select * from journal"))
    assert pw not in everything and pw not in r.stdout + r.stderr
    bad = pgcli("runs", "--state", pgcli.url.replace(pw, pw + "x"))
    assert bad.returncode == 2 and "password authentication failed" in bad.stderr and pw not in bad.stderr
    # No password in the URL: libpq's own ways.
    bare = state_url_for(postgres, pgcli.schema, password=False)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres['port']}:taskrig_test:taskrig:{pw}\n")
    pgpass.chmod(0o600)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".pgpass").write_text(pgpass.read_text())
    (home / ".pgpass").chmod(0o600)
    env = {k: v for k, v in pgcli.env.items() if k != "PGPASSWORD"}
    for how, url, extra in [("PGPASSWORD", bare, {"PGPASSWORD": pw}),
                            ("passfile=", f"{bare}&passfile={pgpass}", {}),
                            ("~/.pgpass", bare, {"HOME": str(home)})]:
        r = subprocess.run([sys.executable, "-m", "engine.cli", "runs", "--json", "--state", url], cwd=pgcli.engine.cwd,
                           capture_output=True, text=True, timeout=60, env={**env, **extra})
        assert r.returncode == 0, (how, r.stderr)
        assert len(json.loads(r.stdout)) == 2, how
    r = subprocess.run([sys.executable, "-m", "engine.cli", "runs", "--state", bare], cwd=pgcli.engine.cwd,
                       capture_output=True, text=True, timeout=60, env={**env, "HOME": str(tmp_path / "nohome")})
    assert r.returncode == 2 and "password" in r.stderr  # none anywhere: libpq says so


# ---------------------------------------------------------------------------------- locks
def test_lock_held_exits_3_naming_the_holder_and_unlock_explains_advisory_locks(pgcli):
    from engine.lock import PgStackLock
    from engine.state import State

    st = State(pgcli.url)
    lock = PgStackLock(st, "pgc_0", "test holds it").acquire()
    r = pgcli("up", f"{TARGET}:hold_0", "-i", "seconds=0")
    assert r.returncode == 3, r.stderr
    assert f"pid {os.getpid()}" in r.stderr and "test holds it" in r.stderr
    assert f"database session {st.conn.info.backend_pid}" in r.stderr
    u = pgcli("unlock", "pgc_0", lock.lock_id)
    assert u.returncode == 2 and "cannot be broken" in u.stderr and "pg_terminate_backend" in u.stderr
    assert pgcli("unlock", "pgc_0", "wrong").returncode == 2
    # The holder's session ends without releasing (as a killed engine's does): the lock is free
    # at once, a stale holder row stays, and unlock clears it.
    st.conn.close()
    assert pgcli.rows("select lock_id from locks where stack = 'pgc_0'") == [(lock.lock_id,)]
    u = pgcli("unlock", "pgc_0", lock.lock_id)
    assert u.returncode == 0, u.stderr
    assert "stale lock record" in u.stdout
    assert pgcli.rows("select count(*) from locks") == [(0,)]
    assert pgcli("unlock", "pgc_0", lock.lock_id).returncode == 2  # not locked
    r = pgcli("up", f"{TARGET}:hold_0", "-i", "seconds=0")
    assert r.returncode == 0, r.stderr


def test_kill9_of_the_lock_holder_frees_the_lock_at_once_and_the_next_engine_recovers(pgcli, tmp_path):
    marker = tmp_path / "started"
    first = pgcli.spawn("up", f"{TARGET}:hold_1", "-i", "seconds=60", "-i", f"marker={marker}")
    wait_for(marker.exists, 60, what="the first run's task")
    assert len(pgcli.live()) == 1
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    t0 = time.monotonic()
    r = pgcli("up", f"{TARGET}:hold_1", "-i", "seconds=0", "--lock-timeout", "0")
    assert r.returncode == 0, r.stderr  # no wait at all: the dead session's lock is gone
    assert time.monotonic() - t0 < 30
    assert "died during running" in r.stderr
    _assert_clean(pgcli)
    runs = pgcli.rows("select status, error from runs order by started")
    assert [s for s, _ in runs] == ["crashed", "succeeded"]
    assert f"engine process {first.pid}" in runs[0][1]


def test_eight_engines_on_four_stacks_serialize_per_stack_and_lose_nothing(pgcli):
    procs = [pgcli.spawn("up", f"{TARGET}:hold_{i % 4}", "-i", "seconds=0.5", "--lock-timeout", "120", "--json")
             for i in range(8)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        docs.append(json.loads(out))
    assert sorted(d["outputs"] for d in docs) == sorted([f"pgc_{i}" for i in range(4)] * 2)
    runs = pgcli.rows("select run_id, stack, status, started, finished from runs order by started")
    assert len(runs) == 8 and {r[2] for r in runs} == {"succeeded"}
    assert sorted(r[0] for r in runs) == sorted(d["run_id"] for d in docs)
    for i in range(4):
        a, b = [r for r in runs if r[1] == f"pgc_{i}"]
        assert a[4] <= b[3], f"runs of pgc_{i} overlapped: {a} {b}"
    journal = pgcli.rows("select run_id, op, status from journal order by seq")
    assert sorted((op, st) for _, op, st in journal) == [("create", "done")] * 8 + [("delete", "done")] * 8
    assert {r for r, _, _ in journal} == {r[0] for r in runs}
    assert pgcli.rows("select count(*) from locks") == [(0,)]
    _assert_clean(pgcli)


# ---------------------------------------------------------------------------------- recovery across hosts
def test_another_host_leaves_local_processes_to_the_host_that_made_them(pgcli, tmp_path):
    marker = tmp_path / "started"
    a = pgcli.spawn("up", f"{TARGET}:mixed", "-i", "seconds=60", "-i", f"marker={marker}", ENGINE_HOSTNAME="host-a")
    wait_for(marker.exists, 60, what="the run on host-a")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    assert len(pgcli.live()) == 2
    # host-b: recovers what any machine reaches, names host-a for the rest, and leaves it.
    r = pgcli("destroy", "pg_mixed", ENGINE_HOSTNAME="host-b")
    assert r.returncode == 1, r.stderr
    assert "host-a" in r.stderr and "left for" in r.stderr
    [(local_id,)] = pgcli.rows("select id from resources where type = 'test:store:LocalThing'")
    assert pgcli.live() == [local_id]
    assert pgcli.rows("select status from runs") == [("running",)]  # still host-a's to finish
    up = pgcli("up", f"{TARGET}:mixed", ENGINE_HOSTNAME="host-b")
    assert up.returncode == 1 and "only host-a can" in up.stderr.lower(), up.stderr
    assert pgcli.live() == [local_id]
    # host-a's next command recovers its own.
    r = pgcli("refresh", "pg_mixed", ENGINE_HOSTNAME="host-a")
    assert r.returncode == 0, r.stderr
    _assert_clean(pgcli)
    assert [s for s, in pgcli.rows("select status from runs order by started")] == ["crashed", "failed"]


def test_one_reaper_acts_on_a_stack_at_a_time(pgcli, tmp_path):
    """Two reapers as on two machines (each its own runtime folder) watch one expired stack:
    exactly one reap run, one delete."""
    import fcntl

    from engine.pgstate import parse

    # The reaper that `up` spawns (python -m engine.reaper) cannot import this test's provider:
    # its host guard is taken here first, so it leaves the stack to the two below.
    guard = parse(pgcli.url).local_dir / "pgc_2.reaper"
    guard.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(guard, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    spec = json.dumps([{"name": "kept", "inputs": {"size": 1}, "idle_ttl": 1}])
    r = pgcli("up", f"{TARGET}:hold_2", "-i", "seconds=0", STORE_SPEC=spec)
    assert r.returncode == 0, r.stderr
    public = pgcli.url.replace(f":{pgcli.postgres['password']}@", "@")
    code = "import sys, pg_tasks; from engine.reaper import main; sys.exit(main(*sys.argv[1:]))"
    reapers = []
    for host in ("a", "b"):
        runtime = tmp_path / f"host-{host}" / "runtime"
        p = subprocess.Popen([sys.executable, "-c", code, public, "pgc_2", str(runtime)], cwd=pgcli.engine.cwd,
                             env={**pgcli.env, "PGPASSWORD": pgcli.postgres["password"]}, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pgcli.engine.spawned.append(p)
        reapers.append(p)
    for p in reapers:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    _assert_clean(pgcli)
    reaps = pgcli.rows("select task, status from runs where kind = 'reap'")
    assert reaps == [("idle_ttl expired", "succeeded")]
    deletes = [line for line in (pgcli.store / "calls.log").read_text().splitlines() if line.startswith("delete")]
    assert len(deletes) == 1, deletes
    os.close(fd)


# ---------------------------------------------------------------------------------- the server restarted
@pytest.mark.slow
def test_postgres_restarted_mid_run_fails_it_clearly_and_the_next_command_recovers(pgcli, postgres, tmp_path):
    marker = tmp_path / "started"
    p = pgcli.spawn("up", f"{TARGET}:hold_3", "-i", "seconds=3", "-i", f"marker={marker}")
    wait_for(marker.exists, 60, what="the task body")
    assert len(pgcli.live()) == 1
    r = pg_ctl(postgres, "restart", "-m", "fast", "-w", "-t", "60", "-l", f"{postgres['dir']}/server.log")
    assert r.returncode == 0, r.stderr
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "lost the connection to the PostgreSQL state" in err and "***" in err
    assert postgres["password"] not in err
    assert len(pgcli.live()) == 1  # its teardown could not be recorded, so it was not done
    assert pgcli.rows("select op from journal where status = 'open'") == []  # its create was closed before
    r = pgcli("up", f"{TARGET}:hold_3", "-i", "seconds=0")
    assert r.returncode == 0, r.stderr
    _assert_clean(pgcli)
    assert [s for s, in pgcli.rows("select status from runs order by started")] == ["crashed", "succeeded"]


# ---------------------------------------------------------------------------------- migrate
def _fill(path: Path) -> None:
    """A state with every kind of row: runs of every status, reusable and ephemeral resources,
    a pending delete, done and open intents, odd text and floats."""
    from engine.resource import Options, Record
    from engine.snapshot import SnapshotManager
    from engine.state import State

    st = State(path)
    for i, stack in enumerate(("mig_a", "mig_b")):
        st.start_run(f"r{i}a", stack, "t.a", {"x": [1, 2.5, "é\u2603"]})
        st.update_run(f"r{i}a", status="succeeded", finished=time.time() + 0.123456789, outputs={"y": None})
        st.start_run(f"r{i}b", stack, "t.b", None, parent_run=f"r{i}a", kind="program")
        snap = SnapshotManager(st, stack, f"r{i}b", "why 'quoted'")
        for n in range(3):
            rec = Record(urn=f"urn:engine:{stack}::test:store:Thing::t{n}", type="test:store:Thing", stack=stack,
                         id=f"{stack}-t{n}", inputs={"size": n, "s": "a\nb"}, outputs={"made": n / 3},
                         deps=[f"urn:engine:{stack}::x::y"] if n else [], options=Options(protect=n == 2),
                         ephemeral=n != 1, run_id=None if n == 1 else f"r{i}b", idle_ttl=30.5 if n == 1 else None)
            intent = snap.begin("create", rec.urn, rec.type, rec.id, rec.inputs, {"deps": rec.deps})
            snap.created(intent, rec)
        old = st.resource(f"urn:engine:{stack}::test:store:Thing::t0")
        new = Record(**{**old.__dict__, "id": old.id + "-2"})
        snap.created(snap.begin("create", new.urn, new.type, new.id), new, replaces=old)
        snap.begin("delete", new.urn, new.type, new.id)  # left open: a dead run's intent
        snap.touch_reusable(time.time() + 0.987654321)  # the stack's last use (schema 4)
        st.update_run(f"r{i}b", error="boom")
    st.close()


def _dump(state) -> dict:
    from engine.state import COPIED

    return {t: [tuple(sorted(r.items())) for r in state.table_rows(t)] for t in COPIED}


def test_migrate_sqlite_to_postgres_and_back_is_equal_row_for_row(engine, pgcli, tmp_path):
    from engine.state import State

    src = tmp_path / "src.db"
    _fill(src)
    before = _dump(State.reader(src))
    assert {t: len(r) for t, r in before.items()} == {"runs": 4, "resources": 6, "pending_deletes": 2, "journal": 10,
                                                          "stack_usage": 2}
    r = engine("state", "migrate", "--state", str(src), "--to", pgcli.url, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stacks"] == ["mig_a", "mig_b"] and doc["rows"]["journal"] == 10
    assert pgcli.postgres["password"] not in r.stdout + r.stderr
    assert _dump(State.reader(pgcli.url)) == before
    # The commands read the copy as they read the file.
    for args in (("state", "list"), ("runs",)):
        assert engine.json(*args, "--state", str(src)) == engine.json(*args, "--state", pgcli.url)
    # A non-empty target is refused and left as it was.
    again = engine("state", "migrate", "--state", str(src), "--to", pgcli.url)
    assert again.returncode == 2 and "holds a state already" in again.stderr
    assert _dump(State.reader(pgcli.url)) == before
    back = tmp_path / "back.db"
    r = engine("state", "migrate", "--state", pgcli.url, "--to", str(back))
    assert r.returncode == 0, r.stderr
    assert _dump(State.reader(back)) == before
    conn_a, conn_b = sqlite3.connect(src), sqlite3.connect(back)
    schema = "select name, sql from sqlite_master where name not like 'sqlite_%' order by name"
    assert conn_a.execute(schema).fetchall() == conn_b.execute(schema).fetchall()
    conn_a.close(), conn_b.close()
    # The journal's sequence continues after the copied rows in PostgreSQL.
    from engine.snapshot import SnapshotManager

    st = State(pgcli.url)
    seq = SnapshotManager(st, "mig_a", "r0a").begin("options", "urn:x", "t", "n").seq
    st.close()
    assert seq == 11


# ---------------------------------------------------------------------------------- the spine's crash cases
@pytest.mark.parametrize("phase,kill,command", [
    ("provisioning", "create:after", "up"),      # the thing exists, its create intent still open
    ("teardown", "delete:before", "refresh"),    # the delete intent committed, the thing still there
    ("teardown", "delete:after", "destroy"),     # the thing gone, its delete intent still open
])
def test_kill9_during_provisioning_or_teardown_is_recovered_by_the_next_command(pgcli, phase, kill, command):
    """The spine's crash cases on a PostgreSQL state, with a provider whose objects a test can
    see (the Dask cluster's version runs on SQLite in test_crash.py; the task phase is the lock
    holder test above)."""
    r = pgcli("up", f"{TARGET}:hold_0", STORE_KILL=kill)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [s for s, in pgcli.rows("select status from runs")] == [phase if phase == "provisioning" else "tearing_down"]
    assert len(pgcli.rows("select 1 from journal where status = 'open'")) == 1
    args = {"up": ("up", f"{TARGET}:hold_0"), "refresh": ("refresh", "pgc_0"), "destroy": ("destroy", "pgc_0")}[command]
    r = pgcli(*args)
    assert r.returncode == 0, r.stderr
    _assert_clean(pgcli)
    runs = pgcli.rows("select status, error from runs order by started")
    assert runs[0][0] == "crashed" and "died during" in runs[0][1]


def test_reuse_keeps_the_thing_between_runs_updates_it_in_place_and_destroys_it(pgcli):
    spec = lambda size: json.dumps([{"name": "kept", "inputs": {"size": size}, "idle_ttl": 600}])  # noqa: E731
    docs = []
    for size in (1, 1, 2):
        r = pgcli("up", f"{TARGET}:hold_0", "--json", STORE_SPEC=spec(size))
        assert r.returncode == 0, r.stderr
        docs.append(json.loads(r.stdout))
    assert [[s["op"] for s in d["steps"]] for d in docs] == [["create"], ["same"], ["update"]]
    [(rid, inputs)] = pgcli.rows("select id, inputs from resources")
    assert json.loads(inputs)["size"] == 2 and pgcli.live() == [rid]
    r = pgcli("destroy", "pgc_0")
    assert r.returncode == 0, r.stderr
    _assert_clean(pgcli)
