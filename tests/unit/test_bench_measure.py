"""nextdeploy.benchkit.measure: steps from progress lines, windows, latency, cutover, disk usage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("aiohttp")

from nextdeploy.benchkit.measure import (
    cutover_seconds,
    disk_usage,
    error_kinds,
    failed_around,
    find_step,
    in_window,
    latency,
    latency_histogram,
    parse_steps,
    pooled_percentile,
    release_of,
    stability_window,
    step_started,
    timeline,
)
from nextdeploy.core.steps import StepName
from nextdeploy.demo.loadgen import RequestRecord, percentile


def rec(start: float, latency: float = 0.01, status: int | None = 200, error: str | None = None,
        release: str | None = "A") -> RequestRecord:
    return RequestRecord(start=start, latency=latency, status=status, error=error, release=release)


LINES = [
    (10.0, "release 20261121-070058-556-fc4f"),
    (10.1, "... [export] export source"),
    (10.2, "ok  [export] export source (0.1 s)"),
    (10.2, "... [build] build the app (next build)"),
    (13.2, "ok  [build] build the app (next build) (3.0 s)"),
    (13.3, "... [preflight] preflight: health gate on a private port (4 s window)"),
    (14.0, "FAILED [preflight] preflight: health gate on a private port (4 s window) (0.7 s)"),
    (14.1, "error: the new release exited with code 1 (fix: ...)"),
    (14.2, "... never ends"),
]


def test_parse_steps_pairs_start_and_end_lines() -> None:
    steps = parse_steps(LINES)
    assert [step.name for step in steps] == ["export", "build", "preflight", None]
    assert [step.title for step in steps] == [
        "export source", "build the app (next build)", "preflight: health gate on a private port (4 s window)",
        "never ends",
    ]
    build = find_step(steps, StepName.BUILD)
    assert build is not None and build.start == 10.2 and build.end == 13.2 and build.ok
    assert build.seconds == pytest.approx(3.0)
    preflight = find_step(steps, (StepName.HELD, StepName.PREFLIGHT))
    assert preflight is not None and preflight.ok is False
    unfinished = steps[-1]
    assert unfinished.title == "never ends" and unfinished.end is None and unfinished.seconds is None
    assert stability_window(steps, 4.0) == 4.0 and stability_window(steps[:2], 4.0) is None


def test_steps_are_found_by_name_whatever_their_title_says() -> None:
    steps = parse_steps([(1.0, "... [verify] check the workers again"), (2.0, "ok  [verify] check the workers again"
                                                                              " (1.0 s)"),
                         (3.0, "... verify every worker runs the new release")])  # untagged: no name
    found = find_step(steps, StepName.VERIFY, last=True)
    assert found is not None and found.title == "check the workers again" and found.end == 2.0
    assert step_started("... [reload] reload workers") == "reload" and step_started("... reload workers") is None
    assert step_started("ok  [reload] reload workers (1.0 s)") is None


def test_an_end_line_without_its_start_uses_the_reported_duration() -> None:
    steps = parse_steps([(5.0, "ok  [save] pm2 save (0.5 s)")])
    assert steps[0].start == pytest.approx(4.5) and steps[0].end == 5.0 and steps[0].name == "save"


def test_release_of_finds_the_announced_id() -> None:
    assert release_of(LINES) == "20261121-070058-556-fc4f"
    assert release_of([(0.0, "nothing")]) is None


def test_windows_latency_and_error_kinds() -> None:
    records = [rec(0.5, 0.010), rec(1.0, 0.020), rec(1.5, 0.030, status=None, error="ServerDisconnectedError"),
               rec(2.0, 0.040, status=502)]
    assert len(in_window(records, (1.0, 2.0))) == 2  # start inclusive, end exclusive
    stats = latency(records)
    assert (stats.count, stats.p50_ms, stats.max_ms) == (4, 20.0, 40.0)
    assert latency([]).p99_ms is None
    assert error_kinds(records) == {"ServerDisconnectedError": 1, "HTTP 502": 1}


def test_cutover_is_the_last_answer_of_another_release() -> None:
    records = [rec(0.0, release="old"), rec(1.0, 0.5, release="old"), rec(1.2, release="new"),
               rec(2.0, release="new"), rec(2.5, error="ClientOSError", status=None, release=None)]
    assert cutover_seconds(records, 0.5, "new") == pytest.approx(1.0)  # old answered until 1.5
    assert cutover_seconds(records, 1.6, "new") == 0.0
    assert cutover_seconds(records, 0.0, "other") is None


def test_failed_around_counts_failures_in_flight_or_just_sent_at_the_instant() -> None:
    records = [rec(1.0, 0.5, status=None, error="ServerDisconnectedError"), rec(1.2, 0.1),
               rec(1.4, 0.01, status=None, error="ClientOSError"), rec(0.5, 0.1, status=500),
               rec(2.0, 0.1, status=None, error="ClientConnectorError")]
    assert failed_around(records, 1.3) == [records[0], records[2]]


def test_timeline_bins_requests_by_start() -> None:
    records = [rec(0.1), rec(0.2, status=500), rec(0.6), rec(1.7, 0.2)]
    bins = timeline(records, 0.5)
    assert [(b.t, b.ok, b.failed) for b in bins] == [(0.0, 1, 1), (0.5, 1, 0), (1.0, 0, 0), (1.5, 1, 0)]
    assert bins[3].max_ms == 200.0


def test_disk_usage_counts_hard_links_once_across_releases(tmp_path: Path) -> None:
    old, new = tmp_path / "releases" / "a", tmp_path / "releases" / "b"
    old.mkdir(parents=True)
    new.mkdir()
    (old / "shared.js").write_bytes(b"x" * 50_000)
    os.link(old / "shared.js", new / "shared.js")
    (new / "own.js").write_bytes(b"y" * 30_000)
    os.symlink("own.js", new / "link.js")

    usage = disk_usage(new, [old])
    assert usage.files == 2
    assert usage.apparent_bytes == 80_000
    assert usage.shared_inodes == 1
    own_blocks = os.lstat(new / "own.js").st_blocks * 512
    assert own_blocks <= usage.disk_bytes < own_blocks + 50_000  # the shared file is not counted again
    alone = disk_usage(new, [])
    assert alone.disk_bytes >= usage.disk_bytes + 50_000


def test_cutover_stops_at_the_next_deploy() -> None:
    records = [rec(1.0, release="new"), rec(2.0, release="newer"), rec(3.0, release="newer")]
    assert cutover_seconds(records, 0.5, "new", until=1.8) == 0.0
    assert cutover_seconds(records, 0.5, "new") == pytest.approx(2.51)


def test_latency_histogram_rounds_to_three_significant_digits() -> None:
    records = [rec(0, 0.0012341), rec(0, 0.0012349), rec(0, 0.02345), rec(0, 0.5), rec(1, 5.0), rec(2, 0.0)]
    assert latency_histogram(records) == {"0": 1, "1.23": 2, "23.4": 1, "500": 1, "5000": 1}


def test_pooled_percentile_is_the_p99_of_all_requests_together() -> None:
    quiet = latency_histogram([rec(i / 100, 0.002) for i in range(990)] + [rec(10, 0.030)] * 10)
    stalled = latency_histogram([rec(i / 100, 0.002) for i in range(190)] + [rec(2, 0.150)] * 10)
    assert pooled_percentile([quiet], 99) == 2.0  # the 10 slow ones are the top 1 %, beyond the p99 rank
    assert pooled_percentile([stalled], 99) == 150.0  # one short window with a stall: its "p99" is the stall
    assert pooled_percentile([quiet, stalled], 99) == 30.0  # rank 1,188 of 1,200: the 10 at 30 ms
    assert pooled_percentile([quiet, stalled], 100) == 150.0
    assert pooled_percentile([], 99) is None and pooled_percentile([{}], 50) is None


@given(st.lists(st.lists(st.floats(min_value=0.0005, max_value=5.0), min_size=1, max_size=40), min_size=1,
                max_size=5), st.sampled_from([50, 90, 99, 100]))
def test_pooling_histograms_equals_the_percentile_of_the_union(groups: list[list[float]], q: float) -> None:
    histograms = [latency_histogram([rec(0, value) for value in group]) for group in groups]
    union = sorted(value for group in groups for value in group)
    exact = percentile(union, q)
    assert exact is not None
    assert pooled_percentile(histograms, q) == pytest.approx(exact * 1000, rel=0.005)
