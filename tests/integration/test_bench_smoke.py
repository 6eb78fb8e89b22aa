"""A fast smoke version of the bench (bench/run.py), so that a regression in zero-downtime shows in CI.

One good and one broken (crash-at-boot) deploy of nextdeploy, keep-alive and new-connection clients at
the same time, every request recorded: 0 failed requests, the good release live, the broken one
rejected while the previous one keeps serving. About 1.5-2 minutes (one cold and two warm builds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from conftest import have_node_tools
from nextdeploy.benchkit.target import kill_processes_under
from support.site import REPO, tool_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_node_tools(), reason="needs node, and pnpm + pm2 under .tools/ (run scripts/test)"),
]


def test_good_and_broken_deploys_under_load_lose_no_request(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [
        sys.executable, str(REPO / "bench" / "run.py"),
        "--strategies", "nextdeploy", "--scenarios", "good,crash-at-boot", "--deploys", "1",
        "--modes", "keepalive,new-connection", "--concurrent-modes", "--rate", "100",
        "--out", str(out), "--work", str(work), "--no-plots",
    ]
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=420, env=tool_env(),
                                   stdin=subprocess.DEVNULL)
    finally:
        leftovers = kill_processes_under(tmp_path)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert not leftovers, f"the bench left processes running: {leftovers}"

    results = json.loads((out / "results.json").read_text())
    assert (out / "RESULTS.md").read_text().startswith("# nextdeploy bench results")
    runs = {run["scenario"]: run for run in results["runs"]}
    assert set(runs) == {"good", "crash-at-boot"}, output
    for run in runs.values():
        assert run["meets_contract"], (run["scenario"], [a["end_state"] for a in run["actions"]], output)
        for label in ("keepalive", "new-connection"):
            figures = run["figures"][label]
            assert figures["requests"] > 500, (run["scenario"], label, figures)
            assert figures["failed_total"] == 0, (run["scenario"], label, figures["errors"], output)
        assert run["figures"]["page"]["failed_total"] == 0, run["figures"]["page"]
    good = runs["good"]["actions"][0]
    assert good["end_state"].startswith("live: v2") and good["build_s"] and good["activation_s"]
    # Found by their stable names: a code-only change goes through the held cut-over's window.
    assert good["stability_window_s"] and {"build", "held", "cutover", "verify"} <= {s["name"] for s in good["steps"]}
    assert good["disk"]["disk_bytes"] > 1_000_000
    broken = runs["crash-at-boot"]["actions"][0]
    assert broken["exit_code"] == 9 and broken["end_state"] == "rejected; v2 kept", broken
    # Answers came from v1 then v2 during the good deploy, and only from v2 during the broken one.
    assert set(runs["good"]["figures"]["keepalive"]["releases"]) == {"v1", "v2"}
    assert set(runs["crash-at-boot"]["figures"]["keepalive"]["releases"]) == {"v2"}
    assert results["summary"]["contract_failed_requests"] == 0


def test_bench_refuses_unknown_names() -> None:
    completed = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--scenarios", "nope"],
                               capture_output=True, text=True, timeout=60, env={**os.environ})
    assert completed.returncode == 2
    assert "unknown scenario 'nope'" in completed.stderr
