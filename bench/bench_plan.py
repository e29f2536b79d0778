"""Preview and a no-change apply over 10,000 (or ``--n``) recorded resources of a synthetic provider.

    python bench/bench_plan.py [--n 10000] [--repeats 5] [--no-profile]
    python bench/bench_plan.py --n 100000 --repeats 3 --no-profile    (issue 9's figure)

A tiny provider (``bench:synthetic:Item``: create returns at once, nothing exists outside
the state) and a plugin that declares N reusable resources are registered here. On a fresh
state file: (0) a first ``up`` creates the N resources (journaled, recorded; timed and
reported), then (a) ``Session.preview(task)`` and (b) another ``up`` whose plan is all
"same" (the no-change apply) are timed, ``--repeats`` times each (median wall reported, with
the process CPU time beside it: the machine may be shared). Goal: (a) and (b) within 1 s
each; the ratio to that goal is printed, and the preview's cost per resource beside the
anchors' (Terraform's and Pulumi's plans as their issues report them), with the peak RSS. Whenever one of them is over, it is run again under
cProfile and its top costs are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import emit, ratio, table

import engine  # noqa: E402
from engine.extend import DeclareContext, Provider, ProviderRegistry, TaskPlugin, TaskPluginRegistry  # noqa: E402
from engine.state import State  # noqa: E402

TYPE = "bench:synthetic:Item"
GOAL_S = 1.0
# (what, resources, seconds): Terraform's plan of 2,900 resources took 20-25 minutes
# (hashicorp/terraform#18981), Pulumi's preview of 1,300 about 4 minutes (pulumi/pulumi#7682).
ANCHORS = [("terraform plan (terraform#18981)", 2900, 22.5 * 60), ("pulumi preview (pulumi#7682)", 1300, 4 * 60)]


class SyntheticItem(Provider):
    """A resource that is only a row: create and delete do nothing outside the state."""

    type_token = TYPE

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        return idempotency_key, {"name": idempotency_key, "index": inputs["index"]}

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        return None


@dataclass
class Synthetic:
    count: int = 10_000


class SyntheticPlugin(TaskPlugin):
    def declare(self, config: Synthetic, ctx: DeclareContext):
        return [ctx.declaration(TYPE, f"item{i:05d}", {"index": i, "size": "small", "labels": {"bench": "plan"}},
                                ephemeral=False)
                for i in range(config.count)]


ProviderRegistry.register(SyntheticItem, override=True)
TaskPluginRegistry.register(Synthetic, SyntheticPlugin(), override=True)


def make_task(n: int):
    env = engine.TaskEnvironment(name="bench_plan", plugin_config=Synthetic(count=n))

    @env.task
    def noop() -> int:
        return 0

    return noop


def wait_for_reapers() -> None:
    """An up that keeps reusable resources starts a reaper process (it exits at once here: no
    idle_ttl); wait for it so that it does not share the CPU with the next measurement."""
    import psutil

    deadline = time.monotonic() + 30
    for p in psutil.Process().children(recursive=True):
        try:
            if "engine.reaper" in " ".join(p.cmdline()):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except (psutil.Error, psutil.TimeoutExpired):
            pass


CPU: dict[str, list[float]] = {}


def timed(fn, label: str = ""):
    """(result, wall seconds); the process CPU seconds go to CPU[label] (less sensitive to a busy machine)."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    CPU.setdefault(label, []).append(time.process_time() - c)
    return out, wall


def profile(fn, top: int = 18) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip() and not ln.startswith("   Ordered")
             and "List reduced" not in ln]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="recorded resources")
    ap.add_argument("--repeats", type=int, default=5, help="timed previews and no-change ups (median reported)")
    ap.add_argument("--no-profile", action="store_true", help="do not profile an operation over the goal")
    args = ap.parse_args()
    task = make_task(args.n)

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as d:
        session = engine.Session(state=Path(d) / "state.db")
        first, t_create = timed(lambda: session.run(task), "create")
        wait_for_reapers()
        st = State(session.state_path)
        recorded = len(st.resources("bench_plan"))
        st.close()
        if first.run["status"] != "succeeded" or recorded != args.n:
            raise SystemExit(f"first up: status {first.run['status']}, {recorded} resources recorded (expected {args.n})")

        previews, noops = [], []
        for _ in range(args.repeats):
            plan, t = timed(lambda: session.preview(task), "preview")
            previews.append(t)
            summary = plan.summary()
            if summary["same"] != args.n or plan.has_changes:
                raise SystemExit(f"preview after the first up is not all 'same': {summary}")
        for _ in range(args.repeats):
            again, t = timed(lambda: session.run(task), "noop")
            noops.append(t)
            wait_for_reapers()
            if again.run["status"] != "succeeded":
                raise SystemExit(f"no-change up: status {again.run['status']}")
        t_preview, t_noop = statistics.median(previews), statistics.median(noops)
        st = State(session.state_path)
        journal_rows = len(st.journal("bench_plan"))
        st.close()

        profiles = {}
        if not args.no_profile:
            if t_preview > GOAL_S:
                profiles["preview"] = profile(lambda: session.preview(task))
            if t_noop > GOAL_S:
                profiles["no-change up"] = profile(lambda: session.run(task))
                wait_for_reapers()

    cpu = {k: round(statistics.median(v), 3) for k, v in CPU.items()}
    rows = [
        [f"first up: create {args.n} resources", 1, round(t_create, 3), round(t_create, 3), cpu["create"], None],
        ["(a) preview (all same)", len(previews), round(t_preview, 3), round(min(previews), 3), cpu["preview"],
         ratio(t_preview, GOAL_S)],
        ["(b) up again: no-change apply", len(noops), round(t_noop, 3), round(min(noops), 3), cpu["noop"],
         ratio(t_noop, GOAL_S)],
    ]
    print(f"Plan and apply over {args.n} recorded resources of {TYPE} (one SQLite state file)")
    print(table(["", "runs", "median s", "min s", "median cpu s", "median / 1 s goal"], rows))
    extra = journal_rows - args.n
    print(f"\npreview summary: {summary}; journal rows after all ups: {journal_rows} "
          + ("(the first up's creates; the no-change ups journaled nothing)" if extra == 0 else
             f"({extra} more than the first up's creates)"))
    for name, text in profiles.items():
        print(f"\n--- cProfile of {name} (over the {GOAL_S:.0f} s goal) ---\n{text}")
    # The anchors are the figures their issues report (neither CLI is installed here): per
    # resource, so that any --n compares.
    per_resource = t_preview / args.n
    anchors = [[name, count, seconds, round(seconds / count * 1000, 1), round(per_resource * 1000, 4),
                f"{per_resource / (seconds / count):.2e}"] for name, count, seconds in ANCHORS]
    print("\n" + table(["anchor (from its issue)", "resources", "plan s", "ms per resource",
                         "taskrig preview ms per resource", "taskrig / anchor"], anchors))
    rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"peak RSS of this process (the first up included): {rss_mb} MB")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average at the end (2 cores, shared machine): {load}")
    emit({"bench": "plan", "n": args.n, "create_s": round(t_create, 3), "preview_s": round(t_preview, 3),
          "noop_up_s": round(t_noop, 3),
          "preview_runs_s": [round(x, 3) for x in previews], "noop_up_runs_s": [round(x, 3) for x in noops], "cpu_median_s": cpu, "goal_s": GOAL_S, "preview_ratio_to_goal": ratio(t_preview, GOAL_S),
          "noop_up_ratio_to_goal": ratio(t_noop, GOAL_S), "journal_rows": journal_rows, "profiled": sorted(profiles), "peak_rss_mb": rss_mb,
          "anchors": {a[0]: a[-1] for a in anchors}, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
