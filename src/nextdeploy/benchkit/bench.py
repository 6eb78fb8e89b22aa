"""The whole bench: every strategy on its own target, every scenario in each client mode, then the outputs.

Outputs in ``out``: ``results.json`` (rewritten after every run, so an interrupted bench keeps what it
measured), ``RESULTS.md``, ``timeline.png`` (an overview) and ``timelines/<run>.png``, and the raw
request records in ``records/``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nextdeploy
from nextdeploy.benchkit import markdown, report, summary
from nextdeploy.benchkit import plot as plots
from nextdeploy.benchkit.engine import STRATEGIES, BenchError, LoadSpec, Run, Session
from nextdeploy.benchkit.scenarios import PLAN, QUICK_PLAN, SCENARIOS
from nextdeploy.benchkit.target import Target, pm2_binary
from nextdeploy.demo.exampleapp import example_source
from nextdeploy.demo.loadgen import Mode

Echo = Callable[[str], None]


@dataclass
class BenchOptions:
    """What to run and where to write it (``bench/run.py`` maps its flags onto these)."""

    out: Path
    quick: bool = False
    good_deploys: int = 2  # repetitions of the good scenario for nextdeploy, per client mode
    baseline_good_deploys: int = 2
    rate: float = 200.0
    path: str = "/api/health"
    page_rate: float = 5.0  # a low-rate probe of `/` beside the main load (0: none)
    connections: int = 16
    modes: tuple[Mode, ...] = ("keepalive", "new-connection")
    concurrent_modes: bool = False  # all client modes in the same run (faster; more load at once)
    strategies: tuple[str, ...] = ("nextdeploy", "seed-script", "pm2-restart")
    scenarios: tuple[str, ...] | None = None  # a subset of the plan, by name
    work: Path | None = None
    keep_work: bool = False
    plots: bool = True
    # Seconds of load before the first command; the first second is warm-up. The rest gives the steady p99
    # (the ratio's denominator) enough samples to be stable from run to run (docs/bench/HISTORY.md).
    pre: float = 8.0
    post: float = 3.0
    publish: Path | None = None  # also copy RESULTS.md and timeline.png here (e.g. docs/bench)
    reload_at_once: int | None = None  # nextdeploy's [server] reload_at_once (None: its default)
    runs: list[Run] = field(default_factory=list)


def load_specs(options: BenchOptions, modes: Sequence[Mode]) -> list[LoadSpec]:
    """The loads of one run: each client mode in ``modes`` at the full rate, plus the probe of ``/``."""
    specs = [LoadSpec(mode, mode, options.rate, options.path, options.connections) for mode in modes]
    if options.page_rate > 0:
        specs.append(LoadSpec("page", "keepalive", options.page_rate, "/", 2))
    return specs


def plan(options: BenchOptions, strategy: str) -> list[tuple[str, int]]:
    """(scenario, repetition) pairs for ``strategy``."""
    names = (QUICK_PLAN if options.quick else PLAN)[strategy]
    if options.scenarios is not None:
        names = tuple(name for name in names if name in options.scenarios)
    good = options.good_deploys if strategy == "nextdeploy" else options.baseline_good_deploys
    pairs: list[tuple[str, int]] = []
    for name in names:
        pairs.extend((name, rep) for rep in range(1, (good if name == "good" else 1) + 1))
    return pairs


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    def version(argv: list[str]) -> str | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                                  env={**os.environ, "PM2_DISABLE_VERSION_CHECK": "1"}).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            return None

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    pm2 = pm2_binary()
    package = (example_source() / "package.json").read_text()
    next_version = package.split('"next":', 1)[1].split('"')[1] if '"next":' in package else None
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": version(["node", "--version"]),
        "pm2": pm2_version(pm2) if pm2 else None,
        "next": next_version,
        "loadavg_start": os.getloadavg(),
        "nextdeploy_source": str(Path(nextdeploy.__file__).resolve().parent),
        "git": git_state(Path(nextdeploy.__file__).resolve().parents[2]),
    }


def git_state(checkout: Path) -> str | None:
    """``<HEAD> (+ local changes)`` of the checkout the measured code comes from, if it is one
    (or the text of a ``SNAPSHOT`` file in a copy of a checkout)."""
    if not (checkout / ".git").exists():
        snapshot = checkout / "SNAPSHOT"
        return snapshot.read_text().strip() if snapshot.is_file() else None
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return f"{head}{' + local changes' if dirty else ''}" if head else None


def pm2_version(binary: str) -> str | None:
    """PM2's version from its package.json: `pm2 --version` would spawn a daemon in ~/.pm2."""
    for parent in Path(binary).resolve().parents:
        package = parent / "package.json"
        if package.is_file():
            try:
                data = json.loads(package.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return str(data.get("version")) if data.get("name") == "pm2" else None
    return None


def run_bench(options: BenchOptions, echo: Echo = print) -> dict[str, Any]:
    """Run every planned scenario; write and return the results."""
    started = time.monotonic()
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    work = options.work or Path(tempfile.mkdtemp(prefix="nextdeploy-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    options.out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "started_at": started_at,
        "machine_info": machine(),
        "strategies": [[key, STRATEGIES[key].title] for key in options.strategies],
        "loads": [spec.to_json() for spec in load_specs(options, options.modes)],
        "concurrent_modes": options.concurrent_modes,
        "modes": list(options.modes),
        "quick": options.quick,
        "pre_s": options.pre,
        "post_s": options.post,
    }
    info = meta["machine_info"]
    meta["machine"] = f"{info['cpus']} CPUs ({info['cpu'] or 'unknown'}), node {info['node']}, pm2 {info['pm2']}, " \
                      f"next {info['next']}"
    groups: list[tuple[Mode, ...]] = [options.modes] if options.concurrent_modes else [(m,) for m in options.modes]
    total = sum(len(plan(options, key)) for key in options.strategies) * len(groups)
    echo(f"bench: {total} runs, work dir {work}, results in {options.out}")
    runs_json: list[dict[str, Any]] = []
    index = 0
    try:
        for key in options.strategies:
            strategy = STRATEGIES[key]
            target = Target(work / key, reload_at_once=options.reload_at_once)
            session = Session(strategy, target, echo)
            try:
                echo(f"[{key}] initial deploy of v1 (no load) at {target.url}")
                setup = session.setup()
                echo(f"[{key}] v1 live after {setup.seconds:.1f} s")
                for name, rep in plan(options, key):
                    for group in groups:
                        index += 1
                        _settle_garbage()
                        run = session.run(SCENARIOS[name], load_specs(options, group), rep, options.pre, options.post)
                        options.runs.append(run)
                        run_json = report.run_to_json(index, run)
                        runs_json.append(run_json)
                        report.write_records(options.out / "records", index, run)
                        echo(f"[{index}/{total}] {_run_line(run_json)}")
                        _write(options, meta, runs_json, started, partial=True)
            except BenchError as error:
                # One strategy that cannot go on must not cost the others' measurements.
                echo(f"[{key}] stopped: {error}")
                meta.setdefault("errors", []).append(f"{key}: {error}")
            finally:
                target.close()
    finally:
        meta["loadavg_end"] = os.getloadavg()
        results = _write(options, meta, runs_json, started, partial=False)
        if not options.keep_work and options.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if options.plots:
        write_plots(options.out, results, echo)
    if options.publish is not None:
        publish(options.out, options.publish, echo)
    return results


def _settle_garbage() -> None:
    """Collect now, and exempt everything kept so far (earlier runs and their request records) from later
    collections: a full collection walks every kept object while the load's event loop waits, and that
    pause is counted as server latency, longer as the bench goes on (docs/bench/HISTORY.md)."""
    gc.collect()
    gc.freeze()


def _write(options: BenchOptions, meta: dict[str, Any], runs_json: list[dict[str, Any]], started: float,
           partial: bool) -> dict[str, Any]:
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["partial"] = partial
    results = {"meta": meta, "runs": runs_json, "summary": summary.summarize(runs_json)}
    report.write_json(options.out / "results.json", results)
    (options.out / "RESULTS.md").write_text(markdown.markdown(results), encoding="utf-8")
    return results


def _run_line(run: dict[str, Any]) -> str:
    parts = [f"{run['strategy']} {run['scenario']} #{run['rep']}"]
    for label in summary.main_loads(run):
        parts.append(f"{label}: {run['figures'][label]['failed']} failed")
    if "page" in run["figures"]:
        parts.append(f"/ probe: {run['figures']['page']['failed']} failed")
    for action in run["actions"]:
        timing = f"{action['deploy_s']:.1f} s"
        if action["build_s"] is not None:
            timing += f", build {action['build_s']:.1f} s"
        if action["activation_s"] is not None:
            timing += f", activation {action['activation_s']:.1f} s"
        parts.append(f"{action['label']}: {action['end_state']} ({timing})")
    if not run["meets_contract"]:
        parts.append("CONTRACT NOT MET")
    return "; ".join(parts)


def write_plots(out: Path, results: dict[str, Any], echo: Echo) -> None:
    """Per-run timelines and the overview (skipped with a message when matplotlib is missing)."""
    if not plots.plot_available():
        echo(f"plots skipped: matplotlib is not installed ({plots.PLOT_HINT})")
        return
    runs = results["runs"]
    for run in runs:
        plots.plot_run(run, out / "timelines" / f"{run['id']}.png")
    overview = overview_rows(runs, "keepalive")
    if overview:
        plots.plot_overview(overview, out / "timeline.png", "keepalive",
                            "keep-alive clients: a good deploy (left) and a release that crashes at boot (right)")
        echo(f"plot: {out / 'timeline.png'} (+ {len(runs)} per-run timelines in {out / 'timelines'})")


def overview_rows(runs: Sequence[dict[str, Any]], label: str) -> list[list[dict[str, Any] | None]]:
    """One row per strategy: its first good run and its crash-at-boot run in ``label`` mode."""
    rows: list[list[dict[str, Any] | None]] = []
    strategies: list[str] = []
    for run in runs:
        if run["strategy"] not in strategies:
            strategies.append(run["strategy"])
    for strategy in strategies:
        row: list[dict[str, Any] | None] = []
        for scenario in ("good", "crash-at-boot"):
            row.append(next((run for run in runs if run["strategy"] == strategy and run["scenario"] == scenario
                             and label in summary.main_loads(run)), None))
        if any(row):
            rows.append(row)
    return rows


def publish(out: Path, docs: Path, echo: Echo) -> None:
    """Copy the markdown report and the overview plot to ``docs`` (e.g. docs/bench) for the README."""
    docs.mkdir(parents=True, exist_ok=True)
    copied = [name for name in ("RESULTS.md", "timeline.png") if (out / name).exists()]
    for name in copied:
        shutil.copyfile(out / name, docs / name)
    echo(f"published {' and '.join(copied)} to {docs}")
    if "timeline.png" not in copied and (docs / "timeline.png").exists():
        echo(f"warning: {docs / 'timeline.png'} is from an earlier run (no plot this time: {plots.PLOT_HINT})")


def main_guard(function: Callable[[], int]) -> int:
    """Run ``function``; a BenchError or Ctrl+C becomes one line and exit code 1/130."""
    try:
        return function()
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted (everything it started was stopped)", file=sys.stderr)
        return 130
