"""Figures from runs: per-run metrics, the JSON results, the markdown tables and the target verdicts.

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
import statistics
from collections.abc import Callable, Iterable, Sequence
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
    pooled_percentile,
    releases_answering,
    stability_window,
    timeline,
)
from nextdeploy.core.steps import StepName
from nextdeploy.demo.loadgen import LoadResult, percentile

STEADY_WARMUP = 1.0
# Where traffic moves to the new release: the symlink switch before a reload (the preflight path, a rollback),
# or the approval of the held workers (the held cut-over).
SWITCH_STEP = (StepName.SWITCH, StepName.CUTOVER)
CONTRACT_SCENARIOS = ("good", "crash-at-boot", "never-listens", "health-500", "exit-after-3s", "slow-start",
                      "page-throws", "rollback", "back-to-back")
CLIENT_TITLES = {"keepalive": "keep-alive", "new-connection": "new conn."}


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


# Summaries ----------------------------------------------------------------------------------------

def main_loads(run_json: dict[str, Any]) -> list[str]:
    return [load["label"] for load in run_json["loads"] if load["label"] != "page"]


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The target verdicts, from the runs' JSON."""
    ours = [run for run in runs if run["strategy"] == "nextdeploy"]
    good_actions = [action for run in ours if run["scenario"] in ("good", "back-to-back")
                    for action in run["actions"] if action["exit_code"] == 0]
    steady_p99 = median_steady_p99(runs)
    contract_failures = {
        f"{run['scenario']}/{label}": run["figures"][label]["failed"]
        for run in ours if run["scenario"] in CONTRACT_SCENARIOS for label in main_loads(run)
    }
    ratios: dict[str, list[float]] = {"deploy": [], "activation": []}
    for run in ours:
        if run["scenario"] not in CONTRACT_SCENARIOS:
            continue
        for label in main_loads(run):
            reference = steady_p99.get(f"nextdeploy/{label}")
            for window in ratios:
                p99 = run["figures"][label][f"latency_{window}"]["p99_ms"]
                if reference and p99 is not None:
                    ratios[window].append(p99 / reference)
    contract_runs = [run for run in ours if run["scenario"] in CONTRACT_SCENARIOS]
    kinds = [action["kind"] for run in contract_runs for action in run["actions"]]
    return {
        # Counted over the contract scenarios only: what the 0-failed-requests verdict covers.
        "our_deploys": kinds.count("deploy"),
        "our_rollbacks": kinds.count("rollback"),
        "our_runs": len(contract_runs),
        "contract_failed_requests": sum(contract_failures.values()),
        "contract_runs_with_failures": {key: value for key, value in contract_failures.items() if value},
        "contract_end_states_ok": all(run["meets_contract"] for run in ours if run["scenario"] in CONTRACT_SCENARIOS),
        "activation_s": _stats(action["activation_s"] for action in good_actions),
        "overhead_s": _stats(action["overhead_s"] for action in good_actions),
        "overhead_beyond_window_s": _stats(action["overhead_beyond_window_s"] for action in good_actions),
        "stability_window_s": _stats(action["stability_window_s"] for action in good_actions),
        "build_s": _stats(action["build_s"] for action in good_actions),
        "deploy_s": _stats(action["deploy_s"] for action in good_actions),
        "step_breakdown_s": step_breakdown(good_actions),
        "disk_bytes_per_release": _stats(action["disk"]["disk_bytes"] for action in good_actions if action["disk"]),
        "steady_p99_ms": steady_p99,
        "p99_ratio_deploy": _stats(ratios["deploy"]),
        "p99_ratio_activation": _stats(ratios["activation"]),
        # Not the baselines': their failed requests (refused in 1 ms) would pass for fast ones.
        "p99_pooled": pooled_p99(contract_runs, steady_from=ours),
        "rollback_s": _stats(action["rollback_s"] for run in ours for action in run["actions"]
                             if action["kind"] == "rollback"),
    }


def median_steady_p99(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median over runs of each run's steady-state p99, per strategy and client mode."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for label in main_loads(run):
            p99 = run["figures"][label]["latency_steady"]["p99_ms"]
            if p99 is not None:
                values.setdefault(f"{run['strategy']}/{label}", []).append(p99)
    return {key: round(statistics.median(found), 1) for key, found in values.items()}


def pooled_p99(runs: Sequence[dict[str, Any]], steady_from: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per client mode: the p99 of every request in the deploy windows of ``runs`` together, and in their
    activation windows, against the p99 of every steady-state request of ``steady_from``. The p99 of
    "latency during a deploy" over many deploys; a single run's window is too short to have one."""
    pooled: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(label for run in steady_from for label in main_loads(run)):
        steady = pooled_percentile(_histograms(steady_from, label, "steady"), 99)
        entry: dict[str, Any] = {"steady_p99_ms": steady}
        for window in ("deploy", "activation"):
            found = _histograms(runs, label, window)
            p99 = pooled_percentile(found, 99)
            entry[f"{window}_p99_ms"] = p99
            entry[f"{window}_requests"] = sum(sum(histogram.values()) for histogram in found)
            entry[f"{window}_ratio"] = round(p99 / steady, 2) if p99 is not None and steady else None
        pooled[label] = entry
    return pooled


def _histograms(runs: Sequence[dict[str, Any]], label: str, window: str) -> list[dict[str, int]]:
    """The latency histograms of one load and window in ``runs`` (none in results older than them)."""
    return [run["figures"][label]["latency_histogram_ms"][window] for run in runs
            if "latency_histogram_ms" in run["figures"].get(label, {})]


def step_breakdown(actions: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Median seconds per step title (ids stripped), in the order steps ran."""
    per_step: dict[str, list[float]] = {}
    for action in actions:
        # Steps and the unlabeled gaps between them, in the order they happened.
        for name, seconds in _interleave(action):
            if seconds is not None:
                per_step.setdefault(name, []).append(seconds)
    return {name: round(statistics.median(values), 2) for name, values in per_step.items()}


def step_kind(title: str) -> str:
    """A step's title without what varies between deploys: release ids, how many releases retention removed."""
    return re.sub(r"^remove \d+ old releases?$", "remove old releases (retention)", title.split(" -> ")[0])


def _interleave(action: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Step names and seconds with each gap placed right after the step it followed."""
    gaps: dict[str, list[float]] = {}
    for gap in action.get("gaps", []):
        gaps.setdefault(gap["after"], []).append(gap["seconds"])
    ordered: list[tuple[str, float | None]] = []
    for name, seconds in [("start of the command", None)] + [
            (step_kind(step.get("title", step["name"])), step["seconds"]) for step in action["steps"]]:
        if seconds is not None:
            ordered.append((name, seconds))
        for gap in gaps.pop(name, []):
            ordered.append((f"(no step) after {name}", gap))
    return ordered


def _stats(values: Iterable[float | None]) -> dict[str, float | int | None]:
    found = sorted(value for value in values if value is not None)
    if not found:
        return {"n": 0, "median": None, "max": None, "min": None}
    return {"n": len(found), "median": round(statistics.median(found), 3), "min": round(found[0], 3),
            "max": round(found[-1], 3), "p90": round(percentile(found, 90) or 0, 3)}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# Markdown -----------------------------------------------------------------------------------------

def _cell(value: Any, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


def _lat(figure: dict[str, Any]) -> str:
    if not figure["count"]:
        return "–"
    return f"{figure['p50_ms']:.0f} / {figure['p99_ms']:.0f} / {figure['max_ms']:.0f}"


def failures_table(runs: Sequence[dict[str, Any]], strategies: Sequence[tuple[str, str]]) -> list[str]:
    """Headline: failed requests per scenario, strategy and client mode (sums over repetitions)."""
    labels = sorted({label for run in runs for label in main_loads(run)}, key=lambda x: x != "keepalive")
    header = ["scenario"] + [f"{title} ({CLIENT_TITLES.get(label, label)})" for _, title in strategies
                             for label in labels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    scenarios: list[str] = []
    for run in runs:
        if run["scenario"] not in scenarios:
            scenarios.append(run["scenario"])
    for scenario in scenarios:
        cells = [f"`{scenario}`"]
        for key, _ in strategies:
            for label in labels:
                matching = [run for run in runs if run["strategy"] == key and run["scenario"] == scenario
                            and label in main_loads(run)]
                if not matching:
                    cells.append("–")
                    continue
                total = sum(run["figures"][label]["failed"] for run in matching)
                deploys = sum(len(run["actions"]) for run in matching)
                ok = all(run["meets_contract"] for run in matching)
                cells.append(f"{total}" + ("" if ok else " ✗") + (f" ({deploys})" if deploys > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def runs_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    """One row per run and client mode, with every figure."""
    header = ["strategy", "scenario", "client", "failed", "`/` probe failed", "end state", "deploy s", "build s",
              "overhead s", "activation s", "cutover s", "rollback s", "steady p50/p99/max ms",
              "deploy p50/p99/max ms", "activation p99 ms", "MB on disk"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        actions = run["actions"]
        for label in main_loads(run):
            fig = run["figures"][label]
            page = run["figures"].get("page")
            failed_cell = str(fig["failed"])
            if fig.get("failed_expected_down"):
                failed_cell += f" (+{fig['failed_expected_down']} while down on purpose)"
            if "failed_at_kill" in fig:
                failed_cell += f" ({fig['failed_at_kill']} on the killed worker)"
            if not run["meets_contract"]:
                failed_cell += " ✗"
            disk = [a["disk"]["disk_bytes"] / 1e6 for a in actions if a["disk"]]
            cutover = [c for c in fig["cutover_s"] if c is not None]
            lines.append("| " + " | ".join([
                run["strategy"], f"`{run['scenario']}`", CLIENT_TITLES.get(label, label), failed_cell,
                _cell(page["failed"] if page else None),
                "; ".join(a["end_state"] for a in actions) or "–",
                _join(a["deploy_s"] for a in actions if a["kind"] == "deploy"),
                _join(a["build_s"] for a in actions),
                _join(a["overhead_s"] for a in actions),
                _join(a["activation_s"] for a in actions),
                _join(cutover),
                _join(a["rollback_s"] for a in actions),
                _lat(fig["latency_steady"]), _lat(fig["latency_deploy"]),
                _cell(fig["latency_activation"]["p99_ms"]),
                _join(disk),
            ]) + " |")
    return lines


def _join(values: Iterable[float | None]) -> str:
    found = [f"{value:.1f}" for value in values if value is not None]
    return ", ".join(found) if found else "–"


def targets_lines(summary: dict[str, Any]) -> list[str]:
    """The targets of issue 4, each with its measured numbers and a verdict."""
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    activation = summary["activation_s"]
    overhead = summary["overhead_s"]
    beyond = summary["overhead_beyond_window_s"]
    deploy_ratio = summary["p99_ratio_deploy"]
    activation_ratio = summary["p99_ratio_activation"]
    disk = summary["disk_bytes_per_release"]
    failures = summary["contract_failed_requests"]
    lines = [
        f"- **0 failed requests** in the good, broken and rollback scenarios, both client modes "
        f"({summary['our_deploys']} deploys and {summary['our_rollbacks']} rollbacks of ours in "
        f"{summary['our_runs']} runs): "
        f"{failures} failed; end states as promised: {'yes' if summary['contract_end_states_ok'] else 'NO'} "
        f"→ {verdict(failures == 0 and summary['contract_end_states_ok'])}",
        f"- **Activation ≤ 5 s** (traffic switch → every worker verified, 2 instances; the switch is the held "
        f"workers' approval, or `current`'s switch before a reload): "
        f"median {_cell(activation['median'])} s, max {_cell(activation['max'])} s "
        f"→ {verdict(_le(activation['max'], 5.0))}",
        f"- **Overhead beyond `next build` ≤ 5 s** (code-only change): median {_cell(overhead['median'])} s "
        f"(deploy {_cell(summary['deploy_s']['median'])} s − build {_cell(summary['build_s']['median'])} s) "
        f"max {_cell(overhead['max'])} s → {verdict(_le(overhead['max'], 5.0))}. Of it, the "
        f"stability window (`[health] stable_for`, {_cell(summary['stability_window_s']['median'])} s: a release "
        "that dies 3 s after start must be rejected before it takes traffic) is a wait; the rest: median "
        f"{_cell(beyond['median'])} s, max {_cell(beyond['max'])} s → {verdict(_le(beyond['max'], 5.0))} "
        "without the window",
        p99_line(summary, verdict),
        f"  Per run instead (each run's own p99; an activation window of ~1 s holds ~200 requests, so its "
        f"p99 is its 2nd or 3rd slowest): whole deploy median {_cell(deploy_ratio['median'])}×, max "
        f"{_cell(deploy_ratio['max'])}×; activation median {_cell(activation_ratio['median'])}×, max "
        f"{_cell(activation_ratio['max'])}×",
        f"- **Disk per additional release** (code-only change, hard links counted once): median "
        f"{_mb(disk['median'])}",
    ]
    return lines


def p99_line(summary: dict[str, Any], verdict: Callable[[bool | None], str]) -> str:
    """The p99 target's verdict, on every request of our deploys pooled."""
    pooled = summary.get("p99_pooled") or {}
    parts, ratios = [], []
    for label, entry in pooled.items():
        ratios += [entry["deploy_ratio"], entry["activation_ratio"]]
        parts.append(f"{CLIENT_TITLES.get(label, label)}: whole deploy {_cell(entry['deploy_ratio'])}× "
                     f"({_cell(entry['deploy_p99_ms'])} ms over {_cell(entry['steady_p99_ms'])} ms steady, "
                     f"{entry['deploy_requests']} requests), activation {_cell(entry['activation_ratio'])}× "
                     f"({_cell(entry['activation_p99_ms'])} ms, {entry['activation_requests']} requests)")
    ok = None if not ratios or None in ratios else max(ratios) <= 3.0
    return (
        "- **p99 during a deploy ≤ 3× steady p99**, the p99 of every request during our deploys and "
        f"rollbacks together (contract scenarios, build included): {'; '.join(parts) or 'no data'} → {verdict(ok)}"
    )


def _le(value: float | int | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _mb(value: float | int | None) -> str:
    return "–" if value is None else f"{value / 1e6:.1f} MB"


def markdown(results: dict[str, Any]) -> str:
    """The README-ready report: headline table, targets, step breakdown, every run."""
    runs = results["runs"]
    meta = results["meta"]
    strategies = [(key, title) for key, title in meta["strategies"]]
    summary = results["summary"]
    load_text = ", ".join(f"{spec['label']} {spec['rate']:g} req/s on `{spec['path']}`"
                          for spec in meta["loads"])
    lines = [
        "# nextdeploy bench results",
        "",
        f"{meta['started_at']} on {meta['machine']}; {meta['duration_s'] / 60:.1f} min"
        + (f"; code: {meta['machine_info']['git']}" if meta.get("machine_info", {}).get("git") else "")
        + f". Loads: {load_text}; every request recorded, none retried. Generated by `bench/run.py`; "
        "see `bench/README.md`.",
        "",
        "## Failed requests per scenario",
        "",
        "Counted from the start of the deploy command until 3 s after it ended (sum over repetitions; "
        "(n) = deploys when more than one; ✗ = the end state broke the contract: a good release not live, "
        "a broken one serving, or the site down).",
        "",
        *failures_table(runs, strategies),
        "",
        "## Targets",
        "",
        *targets_lines(summary),
        "",
        "## Where the time goes (nextdeploy, good deploys, median seconds per step)",
        "",
        "| step | s |",
        "|---|---|",
        *[f"| {name} | {seconds:.2f} |" for name, seconds in summary["step_breakdown_s"].items()],
        "",
        "## Every run",
        "",
        *runs_table(runs),
        "",
    ]
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Latency):
        return asdict(value)
    if isinstance(value, float) and math.isinf(value):
        return None
    raise TypeError(f"not JSON serializable: {value!r}")
