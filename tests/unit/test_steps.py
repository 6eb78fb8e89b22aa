"""Stable step names (nextdeploy.core.steps): the ``--json`` progress carries them, the bench reads them.

The bench's figures (build, stability window, activation, rollback, the worker killed during a reload)
come from steps found by name. These tests fail when a step the bench reads is no longer reported under
its name by the code that runs it, whatever that step's title becomes."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from nextdeploy.core.steps import StepName, tagged, untag, untag_line
from nextdeploy.core.ui import Reporter

SRC = Path(__file__).resolve().parents[2] / "src" / "nextdeploy"


def test_json_progress_lines_carry_the_name_and_plain_ones_only_the_title() -> None:
    reporter = Reporter(json_mode=True, stream=io.StringIO(), err_stream=io.StringIO())
    with reporter.step("switch current -> R2", StepName.SWITCH):
        pass
    with pytest.raises(RuntimeError), reporter.step("verify every worker runs the new release", StepName.VERIFY):
        raise RuntimeError("boom")
    with reporter.step("something without a name"):
        pass
    assert isinstance(reporter.err_stream, io.StringIO) and isinstance(reporter.stream, io.StringIO)
    lines = reporter.err_stream.getvalue().splitlines()
    assert lines[0] == "... [switch] switch current -> R2"
    assert lines[3].startswith("FAILED [verify] verify every worker runs the new release (")
    assert lines[4] == "... something without a name"
    assert reporter.stream.getvalue() == ""  # stdout holds only the JSON result
    assert [(step["name"], step["title"], step["ok"]) for step in reporter.steps_json()] == [
        ("switch", "switch current -> R2", True),
        ("verify", "verify every worker runs the new release", False),
        (None, "something without a name", True),
    ]

    plain = Reporter(stream=io.StringIO(), force_plain=True)
    with plain.step("switch current -> R2", StepName.SWITCH):
        pass
    assert isinstance(plain.stream, io.StringIO)
    assert plain.stream.getvalue().splitlines()[0] == "... switch current -> R2"


def test_a_tag_round_trips_and_an_unknown_one_is_a_title() -> None:
    for name in StepName:
        assert untag(tagged(name, "a [b] title")) == (name.value, "a [b] title")
    assert untag("[nope] a title") == (None, "[nope] a title")
    assert untag("roll back to [/]") == (None, "roll back to [/]")
    assert untag_line("ok  [build] build the app (next build) (3.0 s)") == "ok  build the app (next build) (3.0 s)"
    assert untag_line("FAILED [verify] verify (1.0 s)") == "FAILED verify (1.0 s)"
    assert untag_line("... [switch] switch current -> R2") == "... switch current -> R2"
    for line in ("ok  [nope] x (1.0 s)", "error: [build] failed (fix: y)", "ok  pm2 save (0.5 s)"):
        assert untag_line(line) == line


def test_the_bench_reads_the_steps_of_a_reporters_run_by_name() -> None:
    pytest.importorskip("aiohttp")
    from nextdeploy.benchkit.measure import find_step, parse_steps

    reporter = Reporter(json_mode=True, stream=io.StringIO(), err_stream=io.StringIO())
    for name, title in [(StepName.BUILD, "build it"), (StepName.SWITCH, "point current at R2"),
                        (StepName.RELOAD, "bring the new workers in"), (StepName.VERIFY, "check them")]:
        with reporter.step(title, name):
            pass
    assert isinstance(reporter.err_stream, io.StringIO)
    steps = parse_steps([(float(i), line) for i, line in enumerate(reporter.err_stream.getvalue().splitlines())])
    assert [step.name for step in steps] == ["build", "switch", "reload", "verify"]
    verify = find_step(steps, StepName.VERIFY)
    assert verify is not None and verify.title == "check them" and verify.ok


def _reported_names(paths: list[Path]) -> set[StepName]:
    """The step names passed to ``<reporter>.step(...)`` calls in these files."""
    names: set[StepName] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step":
                names |= _reported_names_in(node)
    return names


def _reported_names_in(call: ast.Call) -> set[StepName]:
    return {StepName[inner.attr] for inner in ast.walk(call) if isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name) and inner.value.id == "StepName"}


def _bench_names() -> set[StepName]:
    """Every step name the bench's modules refer to."""
    names: set[StepName] = set()
    for path in sorted((SRC / "benchkit").glob("*.py")):
        if path.name == "baselines.py":  # it reports steps; it reads none
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "StepName":
                names.add(StepName[node.attr])
    return names


NEXTDEPLOY_FILES = [path for path in SRC.rglob("*.py") if "benchkit" not in path.parts]
BASELINE_FILES = [SRC / "benchkit" / "baselines.py",  # the baselines reuse the build
                  *(SRC / "release" / name for name in ("builder.py", "installer.py", "assemble.py"))]


def test_every_step_the_bench_reads_is_reported_under_its_name() -> None:
    pytest.importorskip("aiohttp")
    from nextdeploy.benchkit.engine import STRATEGIES
    from nextdeploy.benchkit.measure import BUILD_STEP, WINDOW_STEPS
    from nextdeploy.benchkit.report import SWITCH_STEP

    ours, baselines = _reported_names(NEXTDEPLOY_FILES), _reported_names(BASELINE_FILES)
    read = _bench_names()
    assert {StepName.BUILD, StepName.VERIFY, StepName.RELOAD, StepName.ROLLBACK} <= read  # the scan sees the bench
    assert read <= ours | baselines, f"the bench reads steps nothing reports: {sorted(read - ours - baselines)}"
    for strategy in STRATEGIES.values():
        reported = ours if strategy.key == "nextdeploy" else baselines
        assert BUILD_STEP in reported, strategy.key
        assert set(SWITCH_STEP) & reported, strategy.key
        assert set(strategy.activation_end) <= reported, strategy.key
        assert set(strategy.reload_step) <= reported, strategy.key
    # nextdeploy's own figures: the stability window, its rollback, its restart after `pm2 kill`.
    assert set(WINDOW_STEPS) <= ours
    assert {StepName.CUTOVER, StepName.ROLLBACK, StepName.RESTART_LIVE, StepName.RECOVER} <= ours


def test_every_step_nextdeploy_reports_has_a_stable_name() -> None:
    """So that ``--json`` progress and timings name every step: a new ``reporter.step(title)`` needs a
    ``StepName`` too (add one to nextdeploy.core.steps if none fits)."""
    unnamed = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step" \
                    and not _reported_names_in(node):
                unnamed.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not unnamed, f"reporter.step() without a StepName: {unnamed}"
