"""The plan's fast paths against the full diff (issue 9's 100,000-resource benchmark).

What makes a no-change plan of 100,000 cheap: the state's reader (records decoded with
``raw_decode``, sorted in Python, default options shared, a stack's last use read from
``stack_usage``) and ``Session._plan`` (no provider call for equal inputs of a provider that
keeps the base ``diff``, no row-by-row pass when nothing is read back). None of it may call
"same" what the full diff calls changed: every plan here is compared, step for step, with the
plan made the way it was before, from rows decoded by ``json.loads`` and every provider's
``diff`` called for every resource. Inputs that compare equal but encode differently (tuples,
1 and 1.0 and True, NaN), ignored and replace-forcing paths, secrets' digests, options,
dependencies, type changes, ephemeral leftovers and pruning are all drawn.

Also the stack's last use (schema 4): one row per stack, whatever its size; a reusable
resource's idle clock counts from the later of its row's and its stack's; an older file opens
read-only without it and migrates forward.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.extend import Diff, Options, Provider, ProviderRegistry, make_urn, secret_placeholder
from engine.lifecycle import Session
from engine.plan import plan as make_plan
from engine.resource import Declaration, Record
from engine.snapshot import SnapshotManager
from engine.state import SCHEMA_VERSION, State

EXAMPLES = int(os.environ.get("TASKRIG_HYPOTHESIS_EXAMPLES", "300"))
RUN = "r-this"


class Plain(Provider):
    """The base ``diff``: the fast path applies to it."""

    type_token = "test:fast:Plain"
    replace_keys = ("zone",)


class DeleteFirst(Provider):
    """The base ``diff`` and a class-wide delete-before-replace (a type change still replaces)."""

    type_token = "test:fast:DeleteFirst"
    delete_before_replace = True


class Coarse(Provider):
    """Its own ``diff``, whole top-level keys only: always asked."""

    type_token = "test:fast:Coarse"

    def diff(self, old, new):
        return Diff(changed=tuple((k,) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)))


class Eager(Provider):
    """Its own ``diff``, which finds a change even in equal inputs: the fast path must ask it."""

    type_token = "test:fast:Eager"

    def diff(self, old, new):
        return Diff(changed=(("generation",),))


PROVIDERS = (Plain, DeleteFirst, Coarse, Eager)
for _cls in PROVIDERS:
    ProviderRegistry.register(_cls, override=True)
TYPES = [c.type_token for c in PROVIDERS]
NAMES = ("a", "b", "c")


# ---------------------------------------------------------------------- strategies
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([0.0, 1.0, -0.0, 2.5, 2 ** 70, 1e300]),
                    st.sampled_from(["", "x", "é☃", "a.b", 'q"u\\ote', "\u2028"]))
KEYS = st.sampled_from(["a", "b.c", "app.kubernetes.io/name", "*", "0"])
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(KEYS, kids, max_size=3)),
                      max_leaves=6)
TOP = ("size", "zone", "labels", "spec")
inputs_st = st.dictionaries(st.sampled_from(TOP), values, max_size=4)
PATTERNS = ["zone", "labels", 'labels["app.kubernetes.io/name"]', "spec[*]", "spec.a", "size", "*"]


def _tuples(v):
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def _twins(v):
    """Equal under ``==``, another JSON text: 1 -> 1.0, 0 -> False, True -> 1."""
    if isinstance(v, dict):
        return {k: _twins(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_twins(x) for x in v]
    if v is True:
        return 1
    if type(v) is int and v in (0, 1):
        return float(v) if v else False
    return v


@st.composite
def declared_inputs(draw, recorded: dict):
    how = draw(st.sampled_from(["equal", "equal", "tuples", "twins", "change", "drop", "nan"]))
    new = copy.deepcopy(recorded)
    if how == "tuples":
        new = _tuples(new)
    elif how == "twins":
        new = _twins(new)
    elif how == "change":
        new[draw(st.sampled_from(TOP))] = draw(values)
    elif how == "drop" and new:
        new.pop(draw(st.sampled_from(sorted(new))))
    elif how == "nan":
        new["size"] = math.nan
    return new


@st.composite
def options_st(draw):
    return Options(protect=draw(st.booleans()) and draw(st.booleans()), retain_on_delete=draw(st.booleans()),
                   delete_before_replace=draw(st.booleans()),
                   ignore_changes=tuple(draw(st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True))),
                   replace_on_changes=tuple(draw(st.lists(st.sampled_from(PATTERNS), max_size=1))),
                   resume_on_recover=draw(st.booleans()) and draw(st.booleans()))


@st.composite
def stacks(draw):
    """(records, declarations, a touch of the stack or None) for one stack."""
    records, decls = [], []
    for i, name in enumerate(NAMES):
        kind = draw(st.sampled_from(["both", "both", "both", "recorded", "declared", "read", "none"]))
        rec_inputs = draw(inputs_st)
        secret = draw(st.sampled_from([None, "s3cret-one", "s3cret-two"]))
        if secret:
            rec_inputs["token"] = secret_placeholder(secret)
        rec_type = draw(st.sampled_from(TYPES))
        others = [make_urn("S", t, n) for n in NAMES if n != name for t in TYPES[:1]]
        ephemeral = draw(st.booleans())
        if kind in ("both", "recorded"):
            records.append(Record(
                urn=make_urn("S", TYPES[0], name), type=rec_type, stack="S", id=f"S-{name}-{i}",
                inputs=rec_inputs, outputs=draw(st.dictionaries(st.sampled_from(["made", "x.y"]), scalars, max_size=2)),
                deps=draw(st.lists(st.sampled_from(others), max_size=2, unique=True)), options=draw(options_st()),
                ephemeral=ephemeral, run_id=draw(st.sampled_from([RUN, "r-dead"])) if ephemeral else None,
                parent=draw(st.sampled_from([None, others[0]])), idle_ttl=draw(st.sampled_from([None, 30.0])),
                last_used=draw(st.sampled_from([None, 100.0 + i])), created=1000.0 + i))
        if kind in ("both", "declared", "read"):
            new_inputs = draw(declared_inputs(rec_inputs))
            if secret and draw(st.booleans()):  # the secret itself changed: its digest differs
                new_inputs["token"] = secret_placeholder(secret + "-rotated")
            d = Declaration(urn=make_urn("S", TYPES[0], name), type=draw(st.sampled_from([rec_type, rec_type, *TYPES])),
                            inputs=new_inputs, deps=draw(st.lists(st.sampled_from(others), max_size=2, unique=True)),
                            options=draw(st.one_of(st.just(Options()), options_st())),
                            ephemeral=draw(st.sampled_from([ephemeral, not ephemeral, ephemeral])),
                            parent=draw(st.sampled_from([None, others[0]])), physical_name=f"S-{name}",
                            idle_ttl=draw(st.sampled_from([None, 30.0])), read_only=kind == "read",
                            secret_inputs={"api_key": secret} if secret else {})
            decls.append(d)
    touch = draw(st.sampled_from([None, 50.0, 500.0]))
    return records, decls, touch


# ---------------------------------------------------------------------- the two ways
def _full_records(path: Path, stack: str) -> list[Record]:
    """The rows the way the reader decoded them before (json.loads, SQL order), with the stack's
    last use applied to its reusable rows by hand."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("select urn, type, stack, id, inputs, outputs, deps, options, ephemeral, run_id, parent, "
                            "idle_ttl, last_used, created, host from resources where stack = ? order by created",
                            [stack]).fetchall()
        used = dict(conn.execute("select stack, last_used from stack_usage").fetchall())
    finally:
        conn.close()
    out = []
    for r in rows:
        last_used = r[12]
        if not r[8] and used.get(r[2]) is not None:
            last_used = max(x for x in (r[12], used[r[2]]) if x is not None)
        out.append(Record(urn=r[0], type=r[1], stack=r[2], id=r[3], inputs=json.loads(r[4]), outputs=json.loads(r[5]),
                          deps=json.loads(r[6]), options=Options.from_dict(json.loads(r[7])), ephemeral=bool(r[8]),
                          run_id=r[9], parent=r[10], idle_ttl=r[11], last_used=last_used, created=r[13], host=r[14]))
    return out


def _full_diffs(session: Session, records: list[Record], decls: list[Declaration]) -> dict:
    """Every provider's diff for every recorded desired resource, delete-first folded in."""
    by_urn = {r.urn: r for r in records}
    out = {}
    for d in decls:
        if d.urn in by_urn and not d.read_only:
            provider = session.provider(d.type)
            diff = provider.diff(by_urn[d.urn].inputs, d.inputs)
            if provider.delete_before_replace and not diff.delete_before_replace:
                diff = dataclasses.replace(diff, delete_before_replace=True)
            out[d.urn] = diff
    return out


def _outcome(fn):
    try:
        plan = fn()
    except ConfigError as e:
        return ("error", str(e))
    # repr, not ==: NaN is unequal to itself, and repr tells a tuple from a list and 1 from 1.0.
    return [repr((s.op, s.urn, s.type, s.new, s.old, s.changes, s.replace_keys, s.delete_before_replace, s.reason))
            for s in plan.steps]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "state.db"
    state = State(path)
    yield {"path": path, "state": state, "session": Session(state=path), "n": 0}
    state.close()


def _compare(world, records, decls, touch) -> list:
    """Record ``records`` as a stack of their own, plan ``decls`` both ways: the same steps."""
    world["n"] += 1
    stack = f"fast{world['n']}"

    def rename(urn):
        return urn.replace("urn:engine:S::", f"urn:engine:{stack}::") if urn else urn

    records = [dataclasses.replace(r, urn=rename(r.urn), stack=stack, deps=[rename(x) for x in r.deps],
                                   parent=rename(r.parent)) for r in records]
    decls = [dataclasses.replace(d, urn=rename(d.urn), deps=[rename(x) for x in d.deps], parent=rename(d.parent),
                                 physical_name=d.physical_name.replace("S-", f"{stack}-")) for d in decls]
    state, session = world["state"], world["session"]
    snap = SnapshotManager(state, stack, RUN)
    for r in records:
        snap.imported(r)
    if touch is not None:
        snap.touch_reusable(touch)
    fast = _outcome(lambda: session._plan(state, stack, decls, RUN))
    full_records = _full_records(world["path"], stack)
    full = _outcome(lambda: make_plan(stack, decls, full_records, _full_diffs(session, full_records, decls), run_id=RUN))
    assert fast == full
    return fast


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                         HealthCheck.data_too_large])
@given(stacks())
@example(([Record(urn=make_urn("S", TYPES[0], "a"), type=TYPES[0], stack="S", id="S-a", inputs={"spec": [1, 2]},
                  outputs={}, ephemeral=False, created=1.0)],
          [Declaration(urn=make_urn("S", TYPES[0], "a"), type=TYPES[0], inputs={"spec": (1, 2)}, ephemeral=False,
                       physical_name="S-a")], None))
def test_fast_plan_is_the_full_diff(world, case):
    _compare(world, *case)


# ---------------------------------------------------------------------- the cases by name
def _one(world, recorded: dict, declared: dict, type_=Plain.type_token, new_type=None, **opts):
    rec = Record(urn=make_urn("S", TYPES[0], "a"), type=type_, stack="S", id="S-a", inputs=recorded, outputs={"o": 1},
                 ephemeral=False, created=1.0)
    d = Declaration(urn=rec.urn, type=new_type or type_, inputs=declared, options=Options(**opts), ephemeral=False,
                    physical_name="S-a")
    steps = _compare(world, [rec], [d], None)
    assert len(steps) == 1
    return steps[0]


@pytest.mark.parametrize("recorded, declared, op", [
    ({"spec": [1, 2]}, {"spec": (1, 2)}, "update"),  # equal JSON text, unequal values: the full diff's answer
    ({"n": 1}, {"n": 1.0}, "same"),  # equal values, another text
    ({"n": 1}, {"n": True}, "same"),
    ({"n": math.nan}, {"n": math.nan}, "update"),  # NaN is unequal to itself, today and here
    ({"labels": {"a.b": "1"}}, {"labels": {"a.b": "1"}}, "same"),
    ({"labels": {"a.b": "1"}}, {"labels": {"a.b": "2"}}, "update"),
])
def test_equal_text_is_not_enough_and_equal_values_are(world, recorded, declared, op):
    assert f"('{op}'," in _one(world, recorded, declared)


def test_an_ignored_change_keeps_the_recorded_value(world):
    step = _one(world, {"size": 1, "zone": "a"}, {"size": 2, "zone": "a"}, ignore_changes=("size",))
    assert step.startswith("('same',") and "inputs={'size': 1, 'zone': 'a'}" in step


def test_a_type_change_of_equal_inputs_replaces_delete_first_for_such_a_provider(world):
    step = _one(world, {"size": 1}, {"size": 1}, type_=Plain.type_token, new_type=DeleteFirst.type_token)
    assert step.startswith("('replace',") and step.endswith("True, None)")
    # The same with the new type recorded too (so the fast path knows its provider).
    recs = [Record(urn=make_urn("S", TYPES[0], n), type=t, stack="S", id=f"S-{n}", inputs={"size": 1}, outputs={},
                   ephemeral=False, created=float(i)) for i, (n, t) in enumerate((("a", Plain.type_token),
                                                                                  ("b", DeleteFirst.type_token)))]
    decls = [Declaration(urn=r.urn, type=DeleteFirst.type_token, inputs={"size": 1}, ephemeral=False,
                         physical_name=r.id) for r in recs]
    steps = _compare(world, recs, decls, None)
    assert steps[0].startswith("('replace',") and steps[0].endswith("True, None)") and steps[1].startswith("('same',")


def test_a_provider_with_its_own_diff_is_asked_even_for_equal_inputs(world):
    assert _one(world, {"size": 1}, {"size": 1}, type_=Eager.type_token).startswith("('update',")
    assert _one(world, {"size": 1}, {"size": 1}, type_=Coarse.type_token).startswith("('same',")


def test_a_rotated_secret_is_a_change_and_never_in_the_state(world):
    before, after = secret_placeholder("hunter2-old"), secret_placeholder("hunter2-new")
    assert _one(world, {"token": before}, {"token": before}).startswith("('same',")
    assert _one(world, {"token": before}, {"token": after}).startswith("('update',")
    files = [p for p in Path(world["path"]).parent.iterdir() if p.is_file()]
    assert files and not any(b"hunter2" in p.read_bytes() or b"s3cret" in p.read_bytes() for p in files)


def test_options_only_and_dependency_changes_stay_their_own_step(world):
    assert _one(world, {"size": 1}, {"size": 1}, protect=True).startswith("('options',")
    rec = Record(urn=make_urn("S", TYPES[0], "a"), type=TYPES[0], stack="S", id="S-a", inputs={}, outputs={},
                 ephemeral=False, created=1.0, deps=[make_urn("S", TYPES[0], "b")])
    d = Declaration(urn=rec.urn, type=TYPES[0], inputs={}, ephemeral=False, physical_name="S-a")
    assert _compare(world, [rec], [d], None)[0].startswith("('options',")


# ---------------------------------------------------------------------- the stack's last use (schema 4)
def _reusable(stack: str, n: int, ttl: float | None = 30.0, last_used: float = 100.0) -> list[Record]:
    return [Record(urn=make_urn(stack, Plain.type_token, f"r{i}"), type=Plain.type_token, stack=stack, id=f"{stack}-r{i}",
                   inputs={"i": i}, outputs={}, ephemeral=False, idle_ttl=ttl, last_used=last_used, created=50.0 + i)
            for i in range(n)]


def test_a_touch_is_one_row_and_every_reusable_resource_sees_it(tmp_path):
    path = tmp_path / "state.db"
    state = State(path)
    try:
        snap = SnapshotManager(state, "big", "r1")
        for rec in _reusable("big", 50):
            snap.imported(rec)
        eph = dataclasses.replace(_reusable("big", 1)[0], urn=make_urn("big", Plain.type_token, "e"), ephemeral=True,
                                  run_id="r1", last_used=10.0)
        snap.imported(eph)
        snap.touch_reusable(1000.0)
        conn = sqlite3.connect(path)
        assert conn.execute("select * from stack_usage").fetchall() == [("big", 1000.0)]
        # The resource rows were not rewritten: each keeps its own last use.
        assert {r for r, in conn.execute("select last_used from resources")} == {100.0, 10.0}
        conn.close()
        by_urn = {r.urn: r for r in state.resources("big")}
        assert {r.last_used for r in by_urn.values() if not r.ephemeral} == {1000.0}
        assert by_urn[eph.urn].last_used == 10.0
        assert state.resource(eph.urn).last_used == 10.0 and state.resource(_reusable("big", 1)[0].urn).last_used == 1000.0
        # A row written after the touch with a later last use of its own keeps it.
        later = dataclasses.replace(_reusable("big", 1)[0], last_used=2000.0)
        snap.imported(later)
        assert state.resource(later.urn).last_used == 2000.0
    finally:
        state.close()


def test_idle_clock_counts_from_the_later_of_row_and_stack(tmp_path):
    state = State(tmp_path / "state.db")
    try:
        snap = SnapshotManager(state, "s", "r1")
        for rec in _reusable("s", 3, ttl=30.0, last_used=100.0):
            snap.imported(rec)
        assert len(state.expired("s", now=131.0)) == 3  # idle since 100, TTL 30
        snap.touch_reusable(120.0)
        assert state.expired("s", now=131.0) == []  # used again at 120
        assert len(state.expired("s", now=150.0)) == 3
        assert all(r.last_used == 120.0 for r in state.expired("s", now=150.0))
        assert state.expired("other", now=10_000.0) == []
    finally:
        state.close()


def _downgrade_to_3(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("drop table stack_usage")
    conn.execute("update meta set value = '3' where key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_schema_3_file_reads_without_stack_usage_and_migrates_forward(tmp_path):
    path = tmp_path / "state.db"
    state = State(path)
    snap = SnapshotManager(state, "s", "r1")
    for rec in _reusable("s", 2, last_used=100.0):
        snap.imported(rec)
    state.close()
    _downgrade_to_3(path)
    data = path.read_bytes()
    reader = State.reader(path)  # read-only, never migrates: the table reads as empty
    try:
        assert [r.last_used for r in reader.resources("s")] == [100.0, 100.0]
    finally:
        reader.close()
    assert path.read_bytes() == data
    session = Session(state=path)
    d = [Declaration(urn=r.urn, type=r.type, inputs=r.inputs, ephemeral=False, idle_ttl=30.0, physical_name=r.id)
         for r in _reusable("s", 2)]
    state = State(path)
    try:
        conn = sqlite3.connect(path)
        assert conn.execute("select value from meta where key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert conn.execute("select count(*) from stack_usage").fetchone() == (0,)
        conn.close()
        assert [s.op for s in session._plan(state, "s", d, None).steps] == ["same", "same"]
        SnapshotManager(state, "s", "r2").touch_reusable(500.0)
        assert {r.last_used for r in state.resources("s")} == {500.0}
    finally:
        state.close()


def test_postgresql_stack_usage_and_a_schema_3_reader(pg_state):
    from engine.pgstate import connect, parse

    state = State(pg_state)
    try:
        snap = SnapshotManager(state, "s", "r1")
        for rec in _reusable("s", 2, last_used=100.0):
            snap.imported(rec)
        snap.touch_reusable(300.0)
        snap.touch_reusable(400.0)  # an upsert: still one row
        assert state._x("select stack, last_used from stack_usage").fetchall() == [("s", 400.0)]
        assert {r.last_used for r in state.resources("s")} == {400.0}
        assert state.expired("s", now=429.0) == [] and len(state.expired("s", now=431.0)) == 2
    finally:
        state.close()
    target = parse(pg_state)
    conn = connect(target)
    try:  # as an engine of schema 3 left it
        conn.execute("drop table stack_usage")
        conn.execute("update meta set value = '3' where key = 'schema_version'")
    finally:
        conn.close()
    reader = State.reader(pg_state)
    try:
        assert {r.last_used for r in reader.resources("s")} == {100.0}
    finally:
        reader.close()
    state = State(pg_state)  # migrates forward
    try:
        assert state._x("select value from meta where key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert state._x("select count(*) from stack_usage").fetchone() == (0,)
    finally:
        state.close()


# ---------------------------------------------------------------------- the collector's pause
def test_gc_pauses_nest_overlap_and_resume_only_what_they_paused():
    import gc
    import threading
    import weakref

    from engine import gcpause

    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    # Overlapping in two threads: the collector resumes when the last pause ends.
    entered, leave = threading.Event(), threading.Event()

    def other():
        with gcpause.paused():
            entered.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    with gcpause.paused():
        t.start()
        assert entered.wait(10)
    assert not gc.isenabled()
    leave.set()
    t.join(10)
    assert gc.isenabled()
    # A program that turned the collector off keeps it off.
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

    # A cycle made during a pause is still collected after it (promoted, never frozen for good).
    class Node:
        pass

    with gcpause.paused():
        node = Node()
        node.me = node
        ref = weakref.ref(node)
        del node
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None
