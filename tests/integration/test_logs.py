"""Issue 24: the app's logs are rotated by size while it serves under load, and no line is lost."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from support.site import REPO, Site, tool_env

pytest.importorskip("aiohttp")
from nextdeploy.demo.loadgen import BackgroundLoad

pytestmark = pytest.mark.integration

MAX_SIZE, MAX_BYTES, KEEP = "64K", 64 * 1024, 3
OUT_PER_REQUEST, ERR_PER_REQUEST = 20, 8
RATE, SECONDS = 100, 12

# Each request writes numbered lines (per worker: its pid and a sequence number) to stdout and stderr, and
# then the count so far to a file named after its pid: the test knows how many lines each worker wrote.
SPAM_ROUTE = f"""import fs from "node:fs";
import path from "node:path";

export const dynamic = "force-dynamic";
let out = 0;
let err = 0;

export async function GET() {{
  for (let i = 0; i < {OUT_PER_REQUEST}; i++) console.log(`spam-out ${{process.pid}} ${{++out}} ${{"x".repeat(40)}}`);
  for (let i = 0; i < {ERR_PER_REQUEST}; i++) console.error(`spam-err ${{process.pid}} ${{++err}} ${{"y".repeat(40)}}`);
  fs.writeFileSync(path.join(process.env.SPAM_DIR, String(process.pid)), `${{out}} ${{err}}`);
  return Response.json({{ out, err }});
}}
"""
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d: spam-(out|err) (\d+) (\d+)")


def ids_by_worker(lines: list[str], stream: str) -> dict[int, list[int]]:
    found: dict[int, list[int]] = defaultdict(list)
    for line in lines:
        match = LINE.search(line)
        if match and match[1] == stream:
            found[int(match[2])].append(int(match[3]))
    return found


def stream_files(path: Path) -> list[Path]:
    """The rotated files oldest first, then the file itself."""
    return [*(path.with_name(f"{path.name}.{n}") for n in range(KEEP, 0, -1)), path]


def test_logs_rotate_by_size_under_load_without_losing_a_line_or_a_request(site: Site, tmp_path: Path) -> None:
    spam_dir = tmp_path / "spam"
    spam_dir.mkdir()
    (site.app_dir / "app" / "api" / "spam").mkdir(parents=True)
    (site.app_dir / "app" / "api" / "spam" / "route.js").write_text(SPAM_ROUTE)
    site.write_config(server={"env": {"SPAM_DIR": str(spam_dir)}}, logs={"max_size": MAX_SIZE, "keep": KEEP})
    site.deploy().expect_ok()
    logs = {stream: site.root / "logs" / f"pm2-{site.app_name}.{stream}.log" for stream in ("out", "err")}
    pids = sorted(w["pid"] for w in site.nextdeploy("status", "--json").json()["workers"])

    # Sizes sampled while the load runs: no file may grow past twice max_size.
    largest = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal largest
        while not done.is_set():
            for path in site.root.joinpath("logs").glob("pm2-*"):
                try:
                    largest = max(largest, path.stat().st_size)
                except OSError:
                    pass  # renamed meanwhile
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    followed_file = tmp_path / "followed.txt"
    with followed_file.open("w") as sink:  # a file, not a pipe: a full pipe would block the follower
        follower = subprocess.Popen(
            [sys.executable, "-m", "nextdeploy", "logs", "-f", "-n", "0", "-c", str(site.config_path)],
            stdout=sink, stderr=subprocess.PIPE, text=True, env=tool_env(), start_new_session=True)
    try:
        time.sleep(2)  # `logs -f` is at the files' ends
        sampler.start()
        load = BackgroundLoad(site.url + "/api/spam", rate=RATE, duration=SECONDS, mode="keepalive", connections=8)
        result = load.start().result()
        time.sleep(1.5)  # the follower's last polls
    finally:
        done.set()
        follower.send_signal(signal.SIGINT)
        try:
            _, follow_errors = follower.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            follower.kill()
            _, follow_errors = follower.communicate()
    followed = followed_file.read_text()

    assert result.total >= RATE * SECONDS * 0.9 and result.failed == 0, result.summary()
    assert sorted(w["pid"] for w in site.nextdeploy("status", "--json").json()["workers"]) == pids  # no restart
    written = {int(path.name): tuple(map(int, path.read_text().split())) for path in spam_dir.iterdir()}
    assert sorted(written) == pids, written  # both workers wrote
    assert largest <= 2 * MAX_BYTES, largest

    for index, stream in enumerate(("out", "err")):
        total = sum(counts[index] for counts in written.values())
        # A line's length from any of the stream's files: the current one may have just been rotated (empty).
        sample = next(line for path in stream_files(logs[stream]) if path.is_file()
                      for line in path.read_text().splitlines() if "spam-" in line)
        nbytes = total * len(sample) + total
        # The measure quoted in the README (pytest -s shows it).
        print(f"{stream}: {total} lines, about {nbytes} bytes: about {nbytes // MAX_BYTES} rotations; "
              f"largest file seen {largest} bytes")
        files = stream_files(logs[stream])
        assert all(path.is_file() for path in files), files  # rotated at least `keep` times
        assert not logs[stream].with_name(f"{logs[stream].name}.{KEEP + 1}").exists()  # `keep` respected
        lines = [line for path in files for line in path.read_text().splitlines()]
        for pid, ids in ids_by_worker(lines, stream).items():
            # Every line a worker wrote since the oldest kept one is there, once: none lost at ~30 rotations.
            assert ids == list(range(ids[0], written[pid][index] + 1)), (stream, pid, ids[:5], ids[-5:])
        if stream == "out":
            assert all(ids[0] > 1 for ids in ids_by_worker(lines, stream).values())  # the oldest were dropped

    # `logs -f` followed the out stream across every rotation: each worker's lines, none missing.
    assert follower.returncode == 0, follow_errors
    followed_ids = ids_by_worker([line.removeprefix("out | ") for line in followed.splitlines()], "out")
    assert sorted(followed_ids) == pids, followed[-2000:]
    for pid, ids in followed_ids.items():
        assert ids == list(range(ids[0], written[pid][0] + 1)), (pid, ids[:5], ids[-5:])

    # `logs -n N` reads across a rotation: N lines reach back into the rotated file.
    current = logs["out"].read_text().splitlines()
    last_rotated = logs["out"].with_name(logs["out"].name + ".1").read_text().splitlines()[-1]
    shown = site.nextdeploy("logs", "--lines", str(len(current) + 3)).expect_ok().stdout.splitlines()
    out_section = shown[1:shown.index(next(line for line in shown[1:] if line.startswith("==> ")))]
    # (The current file may be empty: the last line written filled the one before. `[-0:]` is the whole list.)
    assert out_section[len(out_section) - len(current):] == current, out_section[-5:]
    assert out_section[2] == last_rotated, out_section[:5]


# A stand-in server for the launcher alone (no Next.js): numbered lines as fast as it can, then it exits.
FAST_SPAM = """const total = Number(process.env.SPAM_LINES);
let n = 0;
function burst() {
  for (let i = 0; i < 200 && n < total; i++) console.log(`spam-out ${process.pid} ${++n} ${"x".repeat(40)}`);
  if (n < total) return setImmediate(burst);
  require("fs").writeFileSync(`${process.env.SPAM_DIR}/${process.pid}`, `${n} 0`);
  process.exit(0);
}
burst();
"""


def run_launchers(release: Path, log: Path, spam_dir: Path, keep: int, processes: int = 3) -> None:
    env = {**tool_env(), "NEXTDEPLOY_LOG_OUT": str(log), "NEXTDEPLOY_LOG_ERR": str(log.with_suffix(".err")),
           "NEXTDEPLOY_LOG_MAX_BYTES": str(16 * 1024), "NEXTDEPLOY_LOG_KEEP": str(keep),
           "NEXTDEPLOY_READY_TIMEOUT_MS": "120000", "SPAM_LINES": "3000", "SPAM_DIR": str(spam_dir)}
    started = [subprocess.Popen(["node", str(release / ".nextdeploy" / "launcher.cjs")], env=env)
               for _ in range(processes)]
    try:
        assert [process.wait(timeout=60) for process in started] == [0] * processes
    finally:
        for process in started:
            process.kill()


def test_launchers_racing_to_rotate_lose_no_line_and_a_lowered_keep_drops_the_surplus(tmp_path: Path) -> None:
    release, spam_dir = tmp_path / "release", tmp_path / "spam"
    (release / ".nextdeploy").mkdir(parents=True)
    spam_dir.mkdir()
    (release / ".nextdeploy" / "launcher.cjs").write_bytes(
        (REPO / "src" / "nextdeploy" / "launcher" / "launcher.cjs").read_bytes())
    (release / ".nextdeploy" / "manifest.json").write_text('{"id": "spam", "server": "spam.js"}')
    (release / "spam.js").write_text(FAST_SPAM)
    log = tmp_path / "logs" / "app.out.log"
    log.parent.mkdir()

    run_launchers(release, log, spam_dir, keep=100)  # 3 x 3,000 lines of ~85 bytes at 16K: ~45 rotations
    written = {int(path.name): int(path.read_text().split()[0]) for path in spam_dir.iterdir()}
    files = sorted(log.parent.glob("app.out.log*"))
    assert 30 < len(files) <= 101, files
    # Every file a rotation made is private, as the first one: the app's output may hold secrets.
    assert {oct(path.stat().st_mode & 0o777) for path in files} == {oct(0o600)}
    lines = [line for n in range(len(files) - 1, 0, -1) for line in log.with_name(f"app.out.log.{n}").read_text()
             .splitlines()] + log.read_text().splitlines()
    found = ids_by_worker(lines, "out")
    assert dict(found) == {pid: list(range(1, count + 1)) for pid, count in written.items()}  # all, once, in order

    run_launchers(release, log, spam_dir, keep=2)  # a lower keep: the older rotated files go
    assert sorted(path.name for path in log.parent.glob("app.out.log*")) == [
        "app.out.log", "app.out.log.1", "app.out.log.2"]
