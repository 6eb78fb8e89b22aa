"""The bench's verdicts, from the runs' JSON (``report.run_to_json``): contract failures, medians, pooled p99,
the step breakdown. The markdown that shows them is ``benchkit/markdown.py``."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from nextdeploy.benchkit.measure import pooled_percentile
from nextdeploy.benchkit.report import step_kind
from nextdeploy.demo.loadgen import percentile

CONTRACT_SCENARIOS = ("good", "crash-at-boot", "never-listens", "health-500", "exit-after-3s", "slow-start",
                      "page-throws", "rollback", "back-to-back")


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
