"""Property paths as tuples in Pulumi's syntax: keys with dots in diffs, ``ignore_changes`` and
``replace_on_changes`` (issue 9, "Keys containing dots"), with a real in-process provider."""

import io
import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st
from rich.console import Console

from conftest import TASKS
from engine import paths
from engine.apply import Applier
from engine.errors import ConfigError
from engine.plan import Plan, plan
from engine.render import print_plan, step_json
from engine.resource import Declaration, Diff, Options, Provider, Record, make_urn
from engine.state import State

TYPE = "test:paths:Thing"


class Things(Provider):
    """Keeps each thing's inputs in a dict, as an API server would."""

    type_token = TYPE

    def __init__(self, context=None):
        super().__init__(context)
        self.things: dict[str, dict] = {}

    def create(self, urn, inputs, key):
        self.things[key] = json.loads(json.dumps(inputs))
        return key, {}

    def update(self, id, old_inputs, new_inputs, outputs=None):
        self.things[id] = json.loads(json.dumps(new_inputs))
        return {}

    def delete(self, id, inputs, outputs):
        self.things.pop(id, None)


def urn(name="a"):
    return make_urn("s", TYPE, name)


def decl(inputs, name="a", **opts):
    return Declaration(urn=urn(name), type=TYPE, inputs=inputs, options=Options(**opts), ephemeral=False,
                       physical_name=name)


def record(inputs, name="a"):
    return Record(urn=urn(name), type=TYPE, stack="s", id=name, inputs=inputs, outputs={}, ephemeral=False)


def plan_one(old_inputs, d, provider=None):
    diff = (provider or Provider()).diff(old_inputs, d.inputs)
    return plan("s", [d], [record(old_inputs)], {d.urn: diff}).steps[0]


@pytest.mark.parametrize("text, path", [
    ("a", ("a",)),
    ("a.b", ("a", "b")),
    ('labels["app.kubernetes.io/version"]', ("labels", "app.kubernetes.io/version")),
    ('spark_conf["spark.executor.memory"]', ("spark_conf", "spark.executor.memory")),
    ("containers[0].image", ("containers", 0, "image")),
    ("a[0][12].b", ("a", 0, 12, "b")),
    ("*", ("*",)),
    ("containers[*].image", ("containers", "*", "image")),
    (r'["key with \"quote\""]', ('key with "quote"',)),
    (r'["back\\slash"].x', ("back\\slash", "x")),
    ('[""]', ("",)),
])
def test_parse_and_render_round_trip(text, path):
    assert paths.parse(text) == path
    assert paths.render(path) == text
    assert paths.parse(paths.render(path)) == path


def test_dotted_text_still_means_nested_keys_and_renders_canonically():
    # What users wrote before (``metadata.labels.taskrig/run-id``) keeps its meaning.
    assert paths.parse("metadata.labels.taskrig/run-id") == ("metadata", "labels", "taskrig/run-id")
    assert paths.render(("metadata", "labels", "taskrig/run-id")) == 'metadata.labels["taskrig/run-id"]'
    assert paths.parse('a["b"]["c"]') == paths.parse("a.b.c") == ("a", "b", "c")
    assert paths.parse("layers.03") == ("layers", "03")  # a dotted segment is a key, never an index


keys = st.one_of(st.text(max_size=8), st.integers(min_value=0, max_value=10**6))


@given(st.lists(keys, min_size=1, max_size=6))
def test_every_path_round_trips(parts):
    path = tuple(parts)
    assert paths.parse(paths.render(path)) == path


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    (".a", "cannot start"),
    ("a.", "trailing"),
    ("a..b", "empty key"),
    ("a[", "missing ']'"),
    ("a[x]", "neither an index"),
    ("a[-1]", "neither an index"),
    ('a["x', "missing closing quote"),
    ('a["x"', "missing ']'"),
    ("a[0]b", "expected '.' or '['"),
    ("a]b", "quote the key"),
])
def test_bad_syntax_says_why(text, why):
    with pytest.raises(paths.PathError, match=re.escape(why)):
        paths.parse(text)


def test_diff_recurses_maps_and_same_length_lists_else_whole():
    old = {"labels": {"app.kubernetes.io/version": "1", "x": 1}, "c": [{"image": "a"}, {"image": "b"}], "l": [1]}
    new = {"labels": {"app.kubernetes.io/version": "2", "x": 1}, "c": [{"image": "a"}, {"image": "z"}], "l": [1, 2]}
    assert paths.diff(old, new) == [("c", 1, "image"), ("l",), ("labels", "app.kubernetes.io/version")]
    assert paths.diff(old, old) == []
    assert paths.diff({"a": {"b": 1}}, {"a": 1}) == [("a",)]


def test_covers_with_wildcards():
    p = ("containers", 1, "image")
    assert paths.covers(("containers",), p) and paths.covers(("containers", "*", "image"), p)
    assert paths.covers(("*",), p) and paths.covers(p, p)
    assert not paths.covers(("containers", 0), p) and not paths.covers(("containers", "1"), p)
    assert not paths.covers(p, ("containers",))


def test_a_key_with_dots_is_one_change_with_its_old_and_new_value():
    d = decl({"labels": {"app.kubernetes.io/version": "2"}})
    step = plan_one({"labels": {"app.kubernetes.io/version": "1"}}, d)
    assert step.op == "update"
    assert [(c.path, c.old, c.new) for c in step.changes] == [(("labels", "app.kubernetes.io/version"), "1", "2")]
    assert step_json(step)["diff"] == {'labels["app.kubernetes.io/version"]': {"old": "1", "new": "2"}}
    out = io.StringIO()
    print_plan(Console(file=out, width=200, no_color=True), Plan("s", [step]))
    assert '~ labels["app.kubernetes.io/version"]: "1" => "2"' in out.getvalue()


def test_ignore_changes_hides_exactly_that_key_and_apply_keeps_the_recorded_value(tmp_path):
    prov = Things()
    state = State(tmp_path / "state.db")
    try:
        conf = {"spark.executor.memory": "1g", "spark.executor.cores": "2"}
        Applier(state, lambda t: prov, "s", "r1", 4).apply(plan("s", [decl({"spark_conf": conf})], [], {}))
        ignore = ('spark_conf["spark.executor.memory"]',)

        only_ignored = decl({"spark_conf": {**conf, "spark.executor.memory": "4g"}}, ignore_changes=ignore)
        rec = state.resources("s")
        step = plan("s", [only_ignored], rec, {only_ignored.urn: prov.diff(rec[0].inputs, only_ignored.inputs)}).steps[0]
        assert step.op == "same" and step.new.inputs["spark_conf"]["spark.executor.memory"] == "1g"

        both = decl({"spark_conf": {"spark.executor.memory": "4g", "spark.executor.cores": "4"}}, ignore_changes=ignore)
        p = plan("s", [both], rec, {both.urn: prov.diff(rec[0].inputs, both.inputs)})
        assert p.steps[0].op == "update"
        assert [c.path for c in p.steps[0].changes] == [("spark_conf", "spark.executor.cores")]
        Applier(state, lambda t: prov, "s", "r2", 4).apply(p)
        applied = {"spark_conf": {"spark.executor.memory": "1g", "spark.executor.cores": "4"}}
        assert prov.things["a"] == applied
        assert state.resources("s")[0].inputs == applied
        assert both.inputs["spark_conf"]["spark.executor.memory"] == "4g"  # the declaration is not edited
    finally:
        state.close()


def test_ignore_changes_under_a_map_a_provider_reports_whole():
    class Coarse(Provider):
        def diff(self, old, new):  # a provider that only says "labels changed", in Pulumi syntax
            return Diff(changed=tuple(k for k in ("labels", "size") if old.get(k) != new.get(k)))

    old = {"labels": {"taskrig/run-id": "r1", "app": "x"}, "size": 1}
    ignore = ('labels["taskrig/run-id"]',)
    step = plan_one(old, decl({"labels": {"taskrig/run-id": "r2", "app": "x"}, "size": 1}, ignore_changes=ignore),
                    Coarse())
    assert step.op == "same" and step.new.inputs["labels"]["taskrig/run-id"] == "r1"
    step = plan_one(old, decl({"labels": {"taskrig/run-id": "r2", "app": "y"}, "size": 1}, ignore_changes=ignore),
                    Coarse())
    assert step.op == "update" and [c.path for c in step.changes] == [("labels",)]
    assert step.new.inputs["labels"] == {"taskrig/run-id": "r1", "app": "y"}


def test_ignore_changes_with_a_wildcard_over_a_list():
    old = {"containers": [{"image": "a:1", "name": "a"}, {"image": "b:1", "name": "b"}]}
    new = {"containers": [{"image": "a:2", "name": "a"}, {"image": "b:2", "name": "c"}]}
    step = plan_one(old, decl(new, ignore_changes=("containers[*].image",)))
    assert [c.path for c in step.changes] == [("containers", 1, "name")]
    assert step.new.inputs == {"containers": [{"image": "a:1", "name": "a"}, {"image": "b:1", "name": "c"}]}


def test_replace_on_changes_with_an_indexed_path():
    old = {"containers": [{"image": "a:1", "name": "a"}, {"image": "b:1", "name": "b"}]}

    def with_(i, key, value):
        new = json.loads(json.dumps(old))
        new["containers"][i][key] = value
        return new

    step = plan_one(old, decl(with_(0, "image", "a:2"), replace_on_changes=("containers[0].image",)))
    assert step.op == "replace" and step.replace_keys == (("containers", 0, "image"),)
    assert step_json(step)["replace_keys"] == ["containers[0].image"]
    assert plan_one(old, decl(with_(1, "image", "b:2"), replace_on_changes=("containers[0].image",))).op == "update"
    assert plan_one(old, decl(with_(0, "name", "z"), replace_on_changes=("containers[0].image",))).op == "update"
    assert plan_one(old, decl(with_(1, "image", "b:2"), replace_on_changes=("containers[*].image",))).op == "replace"


@pytest.mark.parametrize("field", ["ignore_changes", "replace_on_changes"])
def test_a_bad_path_is_a_config_error_naming_the_option_and_the_path(field):
    d = decl({"labels": {"a": "2"}}, **{field: ("labels.ok", 'labels["app.kubernetes.io/version"')})
    with pytest.raises(ConfigError) as err:
        plan_one({"labels": {"a": "1"}}, d)
    assert err.value.field == f"options.{field}"
    assert 'labels["app.kubernetes.io/version"' in str(err.value) and d.urn in str(err.value)
    with pytest.raises(ConfigError, match=f"options.{field}"):  # at the first plan, a create's
        plan("s", [d], [], {})


def test_provider_paths_in_pulumi_syntax_are_parsed_once():
    d = Diff(changed=('labels["a.b"]', ("size",)), replace_keys=["containers[0].image"])
    assert d.changed == (("labels", "a.b"), ("size",)) and d.replace_keys == (("containers", 0, "image"),)
    with pytest.raises(paths.PathError, match="Diff.changed"):
        Diff(changed=("a..b",))

    class Zoned(Provider):
        replace_keys = ('placement["cloud.zone"]',)

    diff = Zoned().diff({"placement": {"cloud.zone": "a"}}, {"placement": {"cloud.zone": "b"}})
    assert diff.replace_keys == (("placement", "cloud.zone"),)


def test_the_cli_plan_json_shows_a_dotted_label_key(engine):
    env = {"STORE_DIR": str(engine.cwd / "store"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TASKS), engine.env.get("PYTHONPATH")]))}
    cli = ["-c", "import state_store; from engine.cli import main; main()"]

    def run(*args, version):
        spec = [{"name": "a", "inputs": {"labels": {"app.kubernetes.io/version": version}}}]
        return subprocess.run([sys.executable, *cli, *args], cwd=engine.cwd, capture_output=True, text=True,
                              timeout=120, env={**engine.env, **env, "STORE_SPEC": json.dumps(spec)})

    r = run("up", "state_store:store_task", version="1")
    assert r.returncode == 0, r.stderr
    r = run("preview", "state_store:store_task", "--json", version="2")
    assert r.returncode == 0, r.stderr
    [step] = json.loads(r.stdout)["steps"]
    assert step["op"] == "update"
    assert step["diff"] == {'labels["app.kubernetes.io/version"]': {"old": "1", "new": "2"}}
