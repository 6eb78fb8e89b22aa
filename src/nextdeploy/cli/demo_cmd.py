"""`nextdeploy demo`: a real zero-downtime deploy on this machine, under load, in about two minutes.

v1 goes live; v2 is deployed under load; a broken v3 (it crashes at boot) is rejected while v2 keeps
serving; then a rollback puts v1 back. Every request is recorded: the demo prints which versions
answered, how many requests failed, and writes a timeline plot.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nextdeploy.cli.options import FiniteFloatRange, debug_option
from nextdeploy.core.errors import HostPathError, NextdeployError
from nextdeploy.core.steps import untag_line
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import Executor, LocalExecutor
from nextdeploy.plans import ops

if TYPE_CHECKING:
    from nextdeploy.benchkit.engine import Run, RunContext

DEMO_MARKER = ".nextdeploy-demo"
DEMO_MARKER_TEXT = "made by `nextdeploy demo`; it may wipe this directory\n"


def step_outcome(line: str) -> str | None:
    """What the demo shows of a deploy's ``--json`` progress line: how each step ended and the error, as a
    person reads them (without the step names scripts read); None for the rest."""
    return untag_line(line) if line.startswith(("ok ", "FAILED", "error:")) else None


def prepare_dir(directory: Path, executor: Executor | None = None) -> None:
    """Use ``directory`` for the demo: new, empty, or a previous demo's (which is stopped and wiped)."""
    executor = executor or LocalExecutor()
    if directory.exists() and not directory.is_dir():
        raise HostPathError(f"{directory} exists and is not a directory", hint="pass another --dir")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / DEMO_MARKER).exists():
        raise HostPathError(f"{directory} is not empty and was not made by `nextdeploy demo`",
                            hint="pass an empty or new --dir; the demo never deletes files it did not write")
    if (directory / DEMO_MARKER).exists():
        # A previous demo (maybe still running with --keep-running): stop it, then start clean.
        from nextdeploy.benchkit.target import kill_processes_under, pm2_binary, tool_env

        pm2_home = directory / "pm2"
        if pm2_home.is_dir():
            pm2 = pm2_binary(directory / "root" / "tools") or "pm2"
            executor.apply(ops.Run((pm2, "kill"), env=tool_env(pm2_home), clean_env=True, timeout=60))
        kill_processes_under(directory.resolve())
        executor.apply_all(ops.Remove(directory / name) for name in ("app", "root", "pm2"))
    executor.apply_all([ops.MakeDirs(directory), ops.WriteFile(directory / DEMO_MARKER, DEMO_MARKER_TEXT)])


def _demo_body(context: RunContext) -> None:
    context.deploy("good")
    context.sleep(2.0)
    context.deploy("crash-at-boot")
    context.sleep(2.0)
    context.rollback()


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("nextdeploy-demo"),
              show_default=True, help="Where the demo app, deploy root and PM2_HOME go (wiped if a previous demo).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port of the demo site [default: a free one].")
@click.option("--rate", type=FiniteFloatRange(1, 2000), default=200, show_default=True,
              help="Requests per second during the demo (keep-alive clients).")
@click.option("--keep-running", is_flag=True, help="Leave the demo site running at the end.")
@debug_option
def demo_command(directory: Path, port: int | None, rate: float, keep_running: bool) -> None:
    """Deploy the example app v1, v2 under load, a broken v3 (rejected), then roll back.

    Prints which versions answered and how many requests failed, and writes a timeline plot.
    """
    from nextdeploy.benchkit import plot as plots
    from nextdeploy.benchkit import report
    from nextdeploy.benchkit.engine import NEXTDEPLOY, BenchError, LoadSpec, Scenario, Session
    from nextdeploy.benchkit.target import Target, pm2_binary

    reporter = Reporter()
    info = reporter.info
    prepare_dir(directory)
    target = Target(directory, port=port) if port else Target(directory)
    started = time.monotonic()

    def echo_step(line: str) -> None:
        shown = step_outcome(line)
        if shown is not None:
            info(f"    {shown}")

    session = Session(NEXTDEPLOY, target, info, echo_steps=echo_step)
    finished = False
    try:
        info(f"nextdeploy demo in {directory.resolve()} (app: {target.app_dir}, PM2_HOME: {target.pm2_home})")
        info("1/4 deploy v1 (no load yet)")
        setup = session.setup()
        info(f"    v1 is live at {target.url} ({setup.seconds:.1f} s)")
        info(f"2/4 deploy v2 under load ({rate:g} req/s, keep-alive) · 3/4 deploy v3, which crashes at boot: "
             "it must be rejected · 4/4 roll back")
        scenario = Scenario("demo", "v2, broken v3, rollback", "rolled-back", _demo_body)
        run = session.run(scenario, [LoadSpec("keepalive", "keepalive", rate, connections=16)], pre=3.0, post=2.0)
        run_json = report.run_to_json(1, run)
        LocalExecutor().apply(ops.WriteFile(directory / "demo-results.json",
                                        json.dumps(run_json, indent=1, default=str) + "\n"))
        _print_results(reporter, run, run_json, target.url)
        plot_path = directory / "timeline.png"
        if plots.plot_available():
            plots.plot_run(run_json, plot_path)
            info(f"plot: {plot_path.resolve()}")
        else:
            info(f"plot skipped: matplotlib is not installed ({plots.PLOT_HINT})")
        info(f"demo took {time.monotonic() - started:.0f} s")
        finished = True
        if keep_running:
            stop = f"PM2_HOME={target.pm2_home} {pm2_binary(target.root / 'tools') or 'pm2'} kill"
            info(f"still running at {target.url}; stop it with: {stop}")
        problems = _problems(run, run_json)
        if problems:
            raise NextdeployError(f"the demo did not go as promised: {'; '.join(problems)}",
                                  hint=f"see {directory / 'demo-results.json'} and {target.root / 'logs'}")
    except BenchError as error:
        raise NextdeployError(str(error), hint=f"see the deploy logs in {target.root / 'logs'}") from None
    finally:
        # Interrupted or failed: never leave the demo's processes behind, --keep-running or not.
        if not (keep_running and finished):
            target.close()
    if not keep_running:
        info(f"stopped the demo's PM2 daemon (PM2_HOME={target.pm2_home}); pass --keep-running to keep the site up")


def _print_results(reporter: Reporter, run: Run, run_json: dict[str, Any], url: str) -> None:
    """A row per step (requests counted from its start to the next one's), then the totals."""
    load = run.loads["keepalive"]
    t0 = load.t0_monotonic
    from rich.table import Table

    table = Table("step", "outcome", "seconds", "requests", "failed", "answered by")
    edges = [action.command.started - t0 for action in run.actions] + [float("inf")]
    for index, (action, figures) in enumerate(zip(run.actions, run_json["actions"], strict=True)):
        records = [r for r in load.records if edges[index] <= r.start < edges[index + 1]]
        answered = Counter(run.versions.get(r.release or "", r.release or "?") for r in records if not r.failed)
        table.add_row(
            action.label, figures["end_state"], f"{action.command.seconds:.1f}", str(len(records)),
            str(sum(1 for r in records if r.failed)),
            ", ".join(f"{version}: {count}" for version, count in sorted(answered.items())),
        )
    reporter.console.print(table)
    figures = run_json["figures"]["keepalive"]
    served = ", ".join(f"{version}: {count}" for version, count in sorted(figures["releases"].items()))
    reporter.info(f"URL: {url}")
    reporter.info(f"served during the load ({figures['requests']} requests): {served}")
    reporter.info(f"failed requests: {figures['failed_total']}"
                  + (f" ({figures['errors']})" if figures["errors"] else ""))


def _problems(run: Run, run_json: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    failed = run_json["figures"]["keepalive"]["failed_total"]
    if failed:
        problems.append(f"{failed} failed requests")
    expected = ("live", "rejected", "rolled back")
    for action, state in zip(run.actions, expected, strict=True):
        if not action_state(run_json, action.label).startswith(state):
            problems.append(f"{action.label}: {action_state(run_json, action.label)}")
    return problems


def action_state(run_json: dict[str, Any], label: str) -> str:
    return str(next(a["end_state"] for a in run_json["actions"] if a["label"] == label))
