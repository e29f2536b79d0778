"""Showing plans and progress: text the way Terraform and Pulumi users read it, or JSON.

Takes plans and records as data; knows nothing of how they were made.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.markup import escape

from .paths import render as render_path
from .plan import Plan, Step
from .report import Reporter

SYMBOL = {"create": "+", "update": "~", "replace": "+-", "delete": "-", "same": " ", "read": ">", "options": "~"}
COLOR = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red", "same": "dim", "read": "cyan",
         "options": "yellow"}
VERB = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted", "read": "read",
        "options": "updated (options only)"}


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def step_json(step: Step) -> dict:
    return {
        "op": step.op, "urn": step.urn, "type": step.type, "inputs": step.inputs,
        "diff": {render_path(c.path): {"old": c.old, "new": c.new} for c in step.changes},
        **({"replace_keys": [render_path(p) for p in step.replace_keys]} if step.replace_keys else {}),
        **({"reason": step.reason} if step.reason else {}),
    }


# The plan document's version (Terraform's ``format_version``): the minor number grows when
# fields are added, the major one only when a field changes meaning or goes away.
PLAN_FORMAT_VERSION = "1.0"


def plan_json(plan: Plan) -> dict:
    return {"format_version": PLAN_FORMAT_VERSION, "stack": plan.stack, "steps": [step_json(s) for s in plan.steps], "summary": plan.summary()}


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    parts = [f"{s[k]} to {k}" for k in ("create", "update", "replace", "delete") if s[k]]
    if s.get("options"):
        parts.append(f"{s['options']} to update options only")
    if s["same"]:
        parts.append(f"{s['same']} unchanged")
    return "Resources: " + (", ".join(parts) if parts else "no changes")


def print_plan(console: Console, plan: Plan, title: str | None = None) -> None:
    """The plan as Pulumi shows it without ``--show-sames``: every step that does something (or
    says why it is kept, as a resumed job), and the unchanged ones only counted in the summary
    line; 100,000 of them printed one per line cost the CLI half a minute. ``--json`` lists all."""
    if title:
        console.print(f"[bold]{escape(title)}[/bold]")
    for step in plan.steps:
        if step.op == "same" and not step.reason:
            continue
        sym, color = SYMBOL[step.op], COLOR[step.op]
        name = step.urn.rsplit("::", 1)[-1]
        extra = f" [dim]({escape(step.reason)})[/dim]" if step.reason else ""
        console.print(f"  [{color}]{sym:<2} {escape(step.type)}  {escape(name)}  {step.op}[/{color}]{extra}")
        if step.op == "create" and step.new is not None:
            for k, v in step.new.inputs.items():
                console.print(f"       [green]+ {escape(k)}: {escape(_short(v))}[/green]")
        for c in step.changes:
            mark = "[magenta](forces replacement)[/magenta]" if c.path in step.replace_keys else ""
            console.print(f"       [yellow]~ {escape(render_path(c.path))}: {escape(_short(c.old))} => {escape(_short(c.new))}[/yellow] {mark}")
    console.print(summary_line(plan))


class ConsoleReporter(Reporter):
    """Streams each step with its elapsed time to stderr."""

    def __init__(self, console: Console):
        self.console = console
        self._started: dict[str, float] = {}

    def message(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/dim]")

    def lock_wait(self, holder: dict) -> None:
        self.console.print(f"[yellow]waiting for the lock held by pid {holder.get('pid')} on {holder.get('host')} "
                           f"({holder.get('operation')}, since {holder.get('started')})[/yellow]")

    def plan(self, plan: Plan, phase: str) -> None:
        if phase == "up":
            print_plan(self.console, plan, f"Plan for stack {plan.stack}:")
        elif plan.steps:
            self.console.print(f"[bold]{phase.capitalize()} of stack {escape(plan.stack)}:[/bold]")

    def step_start(self, step: Step) -> None:
        self._started[step.urn + step.op] = time.monotonic()
        name = step.urn.rsplit("::", 1)[-1]
        self.console.print(f"  [{COLOR[step.op]}]{SYMBOL[step.op]:<2} {escape(step.type)}  {escape(name)}  {step.op}…[/]")

    def step_done(self, result) -> None:
        step = result.step
        if step.op == "same":
            return
        name = step.urn.rsplit("::", 1)[-1]
        self.console.print(f"  [{COLOR[step.op]}]{SYMBOL[step.op]:<2} {escape(step.type)}  {escape(name)}  "
                           f"{VERB.get(step.op, step.op)}[/] [dim]({result.elapsed:.1f}s)[/dim]")

    def task_start(self, task: str, run_id: str) -> None:
        self.console.print(f"  [bold]▶ {escape(task)}[/bold] [dim](run {run_id})[/dim]")

    def task_done(self, task: str, run_id: str, elapsed: float, error) -> None:
        mark = "[green]✓[/green]" if error is None else "[red]✗[/red]"
        self.console.print(f"  {mark} {escape(task)} [dim]({elapsed:.1f}s total)[/dim]")


class CollectingReporter(Reporter):
    """Remembers the steps of an ``up`` for its JSON document."""

    def __init__(self):
        self.phases: dict[str, list[dict]] = {}
        self.messages: list[str] = []
        self._phase = "up"

    def message(self, text: str) -> None:
        self.messages.append(text)

    def plan(self, plan: Plan, phase: str) -> None:
        self._phase = phase
        self.phases.setdefault(phase, [])
        self.phases.setdefault(phase + "_plan", plan_json(plan))

    def step_done(self, result) -> None:
        entry = step_json(result.step)
        entry["elapsed"] = round(result.elapsed, 3)
        if result.record is not None and result.step.op != "delete":
            entry["id"] = result.record.id
            entry["outputs"] = result.record.outputs
        self.phases.setdefault(self._phase, []).append(entry)
