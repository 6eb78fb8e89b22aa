"""Figures from runs: per-action and per-run metrics, the JSON results and the raw records. Summed over runs in
``benchkit/summary.py``, shown as markdown in ``benchkit/markdown.py``.

Windows (on each load's own timeline):
  steady      from 1 s after the load started until the first command started (warm connections, no deploy)
  deploy      from the first command's start to the last command's end (build included)
  activation  from the switch of ``current`` to the end of the strategy's own verification
  counted     the deploy window plus the tail after it; for pm2-killed it starts once the deploy has
              started the app again (the site is down since ``pm2 kill`` on purpose; those failures are
              reported apart as ``failed_expected_down``)
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nextdeploy.benchkit.engine import Action, Run
from nextdeploy.benchkit.measure import (
    BUILD_STEP,
    Latency,
    Window,
    cutover_seconds,
    error_kinds,
    failed,
    failed_around,
    find_step,
    in_window,
    latency,
    latency_histogram,
    releases_answering,
    stability_window,
    timeline,
)
from nextdeploy.core.steps import StepName
from nextdeploy.demo.loadgen import LoadResult

STEADY_WARMUP = 1.0
# Where traffic moves to the new release: the symlink switch before a reload (the preflight path, a rollback),
# or the approval of the held workers (the held cut-over).
SWITCH_STEP = (StepName.SWITCH, StepName.CUTOVER)


# Per action ---------------------------------------------------------------------------------------

def activation_span(action: Action, activation_end: Sequence[StepName]) -> tuple[float, float] | None:
    """Monotonic (start, end) of the switch through the strategy's own verification; None unless the
    release it switched to ended up live (a health loop that ran out is no activation)."""
    if action.kind == "deploy" and (action.release is None or action.serving_after != action.release):
        return None
    steps = action.command.steps
    switch = find_step(steps, SWITCH_STEP)
    if switch is None:
        return None
    ends = [step for step in steps if step.name in activation_end and step.start >= switch.start
            and step.end is not None and step.ok]
    if not ends:
        return None
    end = ends[-1].end
    assert end is not None
    return switch.start, end


def end_state(action: Action, versions: dict[str, str]) -> str:
    """What served after the action, in words."""
    if action.health_after != 200:
        state = f"DOWN (health {action.health_after or 'no answer'})"
    else:
        served = versions.get(action.serving_after or "", action.serving_after or "?")
        rolled = find_step(action.command.steps, StepName.ROLLBACK) is not None
        if action.kind == "rollback":
            state = f"rolled back to {served}"
        elif action.serving_after == action.release:
            state = f"live: {served}"
        elif rolled or action.command.exit_code == 10:
            state = f"rolled back to {served}"
        elif action.command.exit_code != 0 and action.serving_after == action.previous:
            state = f"rejected; {served} kept"
        else:
            state = f"serving {served}"
    if action.page_after != 200:
        state += f"; / answers {action.page_after or 'nothing'}"
    return state


def meets_contract(run: Run) -> bool:
    """Whether the run ended as nextdeploy promises (see ``scenarios``)."""
    if not run.actions:
        return False
    last = run.actions[-1]
    if last.health_after != 200 or last.page_after != 200 or last.command.timed_out:
        return False
    if run.expect == "live":
        return last.serving_after == last.release and last.command.exit_code == 0
    if run.expect == "kept":
        return last.serving_after == last.previous
    return last.serving_after is not None and last.serving_after != last.previous


def action_figures(action: Action, run: Run) -> dict[str, Any]:
    """Timings of one action (seconds)."""
    steps = action.command.steps
    build = find_step(steps, BUILD_STEP)
    span = activation_span(action, run.strategy.activation_end)
    build_s = build.seconds if build else None
    window_s = stability_window(steps, run.stability_window)
    overhead_s = action.command.seconds - build_s if build_s is not None else None
    rollback_step = find_step(steps, StepName.ROLLBACK)
    rollback_s = action.command.seconds if action.kind == "rollback" else (
        rollback_step.seconds if rollback_step else None)
    return {
        "kind": action.kind,
        "label": action.label,
        "version": action.version,
        "variant": action.variant,
        "release": action.release,
        "previous": action.previous,
        "start": _round(action.command.started - run.load_started),
        "end": _round(action.command.ended - run.load_started),
        "exit_code": action.command.exit_code,
        "timed_out": action.command.timed_out,
        "error": action.command.error_line(),
        "end_state": end_state(action, run.versions),
        "deploy_s": _round(action.command.seconds),
        "build_s": _round(build_s),
        "overhead_s": _round(overhead_s),
        # The preflight's stability window is a wait, not work: shown apart so what is left is visible.
        "stability_window_s": window_s,
        "overhead_beyond_window_s": _round(overhead_s - window_s) if overhead_s is not None and window_s else None,
        "activation_s": _round(span[1] - span[0]) if span else None,
        "rollback_s": _round(rollback_s),
        "disk": asdict(action.disk) if action.disk else None,
        "gaps": step_gaps(action),
        "steps": [
            {"name": step.name, "title": step.title, "start": _round(step.start - run.load_started),
             "end": _round(step.end - run.load_started) if step.end is not None else None,
             "seconds": _round(step.seconds), "ok": step.ok}
            for step in steps
        ],
    }


def step_gaps(action: Action, minimum: float = 0.05) -> list[dict[str, Any]]:
    """Time inside the command that no step accounts for (start-up, clean-up between steps), by position."""
    steps = [step for step in action.command.steps if step.end is not None]
    gaps: list[dict[str, Any]] = []
    cursor, previous = action.command.started, "start of the command"
    for step in steps:
        if step.start - cursor >= minimum:
            gaps.append({"after": previous, "seconds": round(step.start - cursor, 3)})
        assert step.end is not None
        cursor, previous = max(cursor, step.end), step_kind(step.title)
    if action.command.ended - cursor >= minimum:
        gaps.append({"after": previous, "seconds": round(action.command.ended - cursor, 3)})
    return gaps


# Per run and load ---------------------------------------------------------------------------------

def windows(run: Run, load: LoadResult) -> dict[str, Window]:
    """The run's windows on ``load``'s timeline (see the module docstring)."""
    t0 = load.t0_monotonic
    end = max(load.elapsed, run.load_stopped - t0)
    if not run.actions:
        return {"steady": (STEADY_WARMUP, end)}
    first = run.actions[0].command.started - t0
    last = run.actions[-1].command.ended - t0
    # A fault injected before the first command (pm2 kill) ends the steady state too.
    disturbed = min([first, *(mark.t - t0 for mark in run.marks)])
    counted_from = (run.counted_from - t0) if run.counted_from is not None else first
    return {
        "steady": (STEADY_WARMUP, disturbed),
        "deploy": (first, last),
        "counted": (counted_from, math.inf),
        "before_counted": (disturbed, counted_from),
    }


def load_figures(run: Run, label: str) -> dict[str, Any]:
    """Failures and latency of one load during one run."""
    load = run.loads[label]
    records = load.records
    t0 = load.t0_monotonic
    spans = windows(run, load)
    activation = []
    for action in run.actions:
        span = activation_span(action, run.strategy.activation_end)
        if span:
            activation.extend(in_window(records, (span[0] - t0, span[1] - t0)))
    counted = in_window(records, spans["counted"]) if "counted" in spans else []
    steady = in_window(records, spans["steady"])
    deploy = in_window(records, spans.get("deploy", (0.0, 0.0)))
    figures: dict[str, Any] = {
        "requests": len(records),
        "failed_total": len(failed(records)),
        "failed": len(failed(counted)),
        "errors": error_kinds(counted),
        "failed_steady": len(failed(steady)),
        "failed_expected_down": len(failed(in_window(records, spans.get("before_counted", (0.0, 0.0))))),
        "latency_steady": asdict(latency(steady)),
        "latency_deploy": asdict(latency(deploy)),
        "latency_activation": asdict(latency(activation)),
        # For the p99 of many runs' requests together (``pooled_p99``).
        "latency_histogram_ms": {"steady": latency_histogram(steady), "deploy": latency_histogram(deploy),
                                 "activation": latency_histogram(activation)},
        "releases": {run.versions.get(release, release): count
                     for release, count in releases_answering(records).items()},
        "achieved_rate": round(len(records) / load.elapsed, 1) if load.elapsed else None,
    }
    kills = [mark for mark in run.marks if mark.label.startswith("SIGKILL")]
    if kills:
        figures["failed_at_kill"] = sum(len(failed_around(records, mark.t - t0)) for mark in kills)
    cutovers = []
    for index, action in enumerate(run.actions):
        span = activation_span(action, run.strategy.activation_end)
        following = run.actions[index + 1].command.started - t0 if index + 1 < len(run.actions) else math.inf
        if span and action.release and action.serving_after == action.release:
            cutovers.append(cutover_seconds(records, span[0] - t0, action.release, following))
    figures["cutover_s"] = cutovers
    return figures


def run_to_json(index: int, run: Run) -> dict[str, Any]:
    """Everything about a run except the raw request records."""
    return {
        "id": run_id(index, run),
        "strategy": run.strategy.key,
        "scenario": run.scenario,
        "rep": run.rep,
        "expect": run.expect,
        "meets_contract": meets_contract(run),
        "loads": [spec.to_json() for spec in run.specs],
        "notes": run.notes,
        "marks": [{"t": _round(mark.t - run.load_started), "label": mark.label} for mark in run.marks],
        "counted_from": _round(run.counted_from - run.load_started) if run.counted_from is not None else None,
        "actions": [action_figures(action, run) for action in run.actions],
        "figures": {label: load_figures(run, label) for label in run.loads},
        "timeline": {
            label: {
                "offset": _round(load.t0_monotonic - run.load_started),
                "bins": [asdict(b) for b in timeline(load.records, 0.5)],
            }
            for label, load in run.loads.items()
        },
    }


def run_id(index: int, run: Run) -> str:
    modes = "+".join(spec.label for spec in run.specs if spec.label != "page")
    return f"{index:02d}-{run.strategy.key}-{run.scenario}-{run.rep}-{modes}"


def write_records(directory: Path, index: int, run: Run) -> None:
    """Raw request records, one gzipped CSV per load (start and latency in seconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    for label, load in run.loads.items():
        with gzip.open(directory / f"{run_id(index, run)}-{label}.csv.gz", "wt", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["start", "latency", "status", "error", "release"])
            for record in load.records:
                writer.writerow([f"{record.start:.4f}", f"{record.latency:.4f}", record.status or "",
                                 record.error or "", record.release or ""])


def step_kind(title: str) -> str:
    """A step's title without what varies between deploys: release ids, how many releases retention removed."""
    return re.sub(r"^remove \d+ old releases?$", "remove old releases (retention)", title.split(" -> ")[0])


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Latency):
        return asdict(value)
    if isinstance(value, float) and math.isinf(value):
        return None
    raise TypeError(f"not JSON serializable: {value!r}")
