"""nextdeploy.benchkit.report on synthetic runs: windows, figures, end states, verdicts, markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from nextdeploy.benchkit import markdown, report, summary
from nextdeploy.benchkit.commands import CommandRecord
from nextdeploy.benchkit.engine import NEXTDEPLOY, SEED, Action, LoadSpec, Mark, Run
from nextdeploy.core.steps import StepName, tagged
from nextdeploy.demo.loadgen import LoadResult, RequestRecord

T0 = 1000.0  # time.monotonic() when the load started


def command(start: float, steps: list[tuple[StepName | None, str, float, float]], exit_code: int = 0,
            release: str = "R2") -> CommandRecord:
    """A finished command whose steps ran at the given load times (progress lines as ``--json`` prints them)."""
    lines = [(T0 + start, f"release {release}")]
    for name, title, begin, end in steps:
        lines.append((T0 + begin, f"... {tagged(name, title)}"))
        lines.append((T0 + end, f"ok  {tagged(name, title)} ({end - begin:.1f} s)"))
    return CommandRecord(["nextdeploy", "deploy"], T0 + start, T0 + steps[-1][3] + 0.2, exit_code, lines=lines)


GOOD_STEPS: list[tuple[StepName | None, str, float, float]] = [
    (StepName.EXPORT, "export source", 4.1, 4.2),
    (StepName.BUILD, "build the app (next build)", 4.2, 7.2),
    (StepName.PREFLIGHT, "preflight: health gate on a private port (4 s window)", 7.5, 12.0),
    (StepName.SWITCH, "switch current -> R2", 12.5, 12.5),
    (StepName.RELOAD, "reload workers one by one", 12.5, 16.0),
    (StepName.VERIFY, "verify every worker runs the new release", 16.0, 18.0),
    (None, "pm2 save (restore this release on reboot)", 18.0, 18.3),
]


def load(records: list[RequestRecord]) -> LoadResult:
    return LoadResult(url="http://x", mode="keepalive", rate=100, duration=30, elapsed=22.0, t0_monotonic=T0,
                      records=records)


def good_run() -> Run:
    records = [RequestRecord(t / 10, 0.010 if t < 40 else 0.030, 200, None, "R1" if t < 140 else "R2")
               for t in range(0, 220)]
    records[150] = RequestRecord(15.0, 0.5, None, "ClientOSError", None)
    action = Action("deploy", "deploy v2", command(4.0, GOOD_STEPS), "R1", "R2", "v2", "good",
                    serving_after="R2", health_after=200, page_after=200)
    run = Run(NEXTDEPLOY, "good", 1, loads={"keepalive": load(records)},
              specs=[LoadSpec("keepalive", "keepalive", 100)], actions=[action], versions={"R1": "v1", "R2": "v2"},
              load_started=T0, load_stopped=T0 + 22.0, stability_window=4.0)
    return run


def test_figures_of_a_good_run() -> None:
    data = report.run_to_json(1, good_run())
    assert data["id"] == "01-nextdeploy-good-1-keepalive"
    assert data["meets_contract"]
    action = data["actions"][0]
    assert action["end_state"] == "live: v2"
    assert action["build_s"] == pytest.approx(3.0)
    assert action["activation_s"] == pytest.approx(5.5)  # switch 12.5 -> verify end 18.0
    assert action["overhead_s"] == pytest.approx(action["deploy_s"] - 3.0)
    assert action["stability_window_s"] == 4.0  # the config's window, as the deploy ran a preflight
    assert action["overhead_beyond_window_s"] == pytest.approx(action["overhead_s"] - 4.0)
    assert action["gaps"][0] == {"after": "start of the command", "seconds": pytest.approx(0.1)}
    figures = data["figures"]["keepalive"]
    assert figures["failed"] == 1 and figures["errors"] == {"ClientOSError": 1}
    assert figures["failed_steady"] == 0
    assert figures["latency_steady"]["p99_ms"] == 10.0  # steady = 1 s .. 4 s
    assert figures["latency_deploy"]["max_ms"] == 500.0
    assert figures["releases"] == {"v1": 140, "v2": 79}
    assert figures["cutover_s"] == [pytest.approx(1.43, abs=0.01)]  # switch 12.5 s; last R1 answer ends 13.93 s


def test_a_fault_before_the_command_ends_the_steady_window_and_is_not_counted() -> None:
    run = good_run()
    records = run.loads["keepalive"].records
    for index in range(20, 40):  # down from 2.0 s to 4.0 s, on purpose
        records[index] = RequestRecord(index / 10, 0.001, None, "ClientConnectorError", None)
    run.marks.append(Mark(T0 + 2.0, "pm2 kill"))
    run.counted_from = T0 + 4.0
    figures = report.load_figures(run, "keepalive")
    assert figures["failed_steady"] == 0
    assert figures["failed_expected_down"] == 20
    assert figures["failed"] == 1
    assert figures["failed_total"] == 21


def test_end_states_and_the_contract() -> None:
    versions = {"R1": "v1", "R2": "v2 (crash-at-boot)"}
    rejected = Action("deploy", "deploy v2", command(4.0, GOOD_STEPS[:3], exit_code=9), "R1", "R2",
                      serving_after="R1", health_after=200, page_after=200)
    assert report.end_state(rejected, versions) == "rejected; v1 kept"
    rolled = Action("deploy", "deploy v2", command(4.0, [*GOOD_STEPS[:4], (StepName.ROLLBACK, "roll back to R1 "
                    "(newest other release by mtime)", 80.0, 81.0)], exit_code=1), "R1", "R2", serving_after="R1",
                    health_after=200, page_after=200)
    assert report.end_state(rolled, versions) == "rolled back to v1"
    down = Action("deploy", "deploy v2", command(4.0, GOOD_STEPS), "R1", "R2", health_after=None, page_after=502)
    assert report.end_state(down, versions) == "DOWN (health no answer); / answers 502"

    run = Run(SEED, "crash-at-boot", 1, actions=[rolled], expect="kept")
    assert report.meets_contract(run)  # back on v1 in the end (the failures are counted apart)
    run.actions = [down]
    assert not report.meets_contract(run)


def test_markdown_has_the_headline_table_targets_and_every_run() -> None:
    runs = [report.run_to_json(1, good_run())]
    results = {
        "meta": {"strategies": [["nextdeploy", "nextdeploy"], ["seed-script", "seed script"]],
                 "loads": [LoadSpec("keepalive", "keepalive", 100).to_json()], "started_at": "today",
                 "machine": "2 CPUs", "duration_s": 60.0},
        "runs": runs,
        "summary": summary.summarize(runs),
    }
    text = markdown.markdown(results)
    assert "| scenario | nextdeploy (keep-alive) | seed script (keep-alive) |" in text
    assert "| `good` | 1 | – |" in text
    assert ("**Activation ≤ 5 s** (traffic switch → every worker verified, 2 instances; the switch is the held "
            "workers' approval, or `current`'s switch before a reload): median 5.5 s") in text
    assert "| build the app (next build) | 3.00 |" in text
    overhead = results["summary"]["overhead_beyond_window_s"]["median"]
    assert "stability window (`[health] stable_for`, 4.0 s" in text and f"the rest: median {overhead:.1f} s" in text
    verdicts = results["summary"]
    assert verdicts["contract_failed_requests"] == 1
    assert verdicts["our_deploys"] == 1 and verdicts["our_rollbacks"] == 0 and verdicts["our_runs"] == 1


def test_step_kinds_merge_what_varies_between_deploys() -> None:
    assert report.step_kind("switch current -> 20261121-070058-556-fc4f") == "switch current"
    assert report.step_kind("remove 3 old releases") == report.step_kind("remove 1 old release")
    assert report.step_kind("preflight: health gate on a private port (4 s window)").endswith("(4 s window)")


def test_publish_says_what_it_copied_and_flags_a_stale_plot(tmp_path: Path) -> None:
    from nextdeploy.benchkit.bench import publish

    out, docs = tmp_path / "out", tmp_path / "docs"
    out.mkdir()
    (out / "RESULTS.md").write_text("# new")
    docs.mkdir()
    (docs / "timeline.png").write_bytes(b"old plot")
    lines: list[str] = []
    publish(out, docs, lines.append)
    assert (docs / "RESULTS.md").read_text() == "# new"
    assert lines[0] == f"published RESULTS.md to {docs}"
    assert "is from an earlier run" in lines[1]

    (out / "timeline.png").write_bytes(b"new plot")
    lines.clear()
    publish(out, docs, lines.append)
    assert lines == [f"published RESULTS.md and timeline.png to {docs}"]
    assert (docs / "timeline.png").read_bytes() == b"new plot"


def test_the_p99_target_pools_every_request_of_the_deploys() -> None:
    runs = [report.run_to_json(1, good_run()), report.run_to_json(2, good_run())]
    pooled = summary.summarize(runs)["p99_pooled"]["keepalive"]
    # Steady 10 ms; the deploys' 290 requests take 30 ms but for one failed 500 ms request each: the top 0.7 %.
    assert pooled["steady_p99_ms"] == 10.0
    assert pooled["deploy_p99_ms"] == 30.0 and pooled["deploy_requests"] == 290 and pooled["deploy_ratio"] == 3.0
    # The activation windows (110 requests) hold both slow ones: the top 1.8 %, so the p99 is one of them.
    assert pooled["activation_p99_ms"] == 500.0 and pooled["activation_ratio"] == 50.0
    line = markdown.p99_line(summary.summarize(runs), lambda ok: "met" if ok else "NOT met")
    assert "keep-alive: whole deploy 3.0× (30.0 ms over 10.0 ms steady, 290 requests)" in line
    assert line.split(" → ")[1].startswith("NOT met")


def test_results_without_latency_histograms_give_no_p99_verdict() -> None:
    run = report.run_to_json(1, good_run())
    del run["figures"]["keepalive"]["latency_histogram_ms"]
    pooled = summary.summarize([run])["p99_pooled"]["keepalive"]
    assert pooled["steady_p99_ms"] is None and pooled["deploy_ratio"] is None
    assert "→ n/a" in markdown.p99_line(summary.summarize([run]), lambda ok: "n/a" if ok is None else "met")
