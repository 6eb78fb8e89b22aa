"""Stress the launcher's log rotation: `.venv/bin/python bench/log_rotation.py [--processes 4] [--lines 100000]`.

Runs the launcher (src/nextdeploy/launcher/launcher.cjs) in several processes at once on a tiny "server" that
writes numbered lines as fast as it can (every tenth also to stderr) and exits, all into the same two log
files with a small max_size; then counts, for every process, the lines written against the lines found in
the files and their rotated copies. `keep` is large enough to keep every rotated file. No Next.js involved.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[1] / "src" / "nextdeploy" / "launcher" / "launcher.cjs"
SPAM = """const total = Number(process.env.SPAM_LINES);
let n = 0;
function burst() {
  for (let i = 0; i < 500 && n < total; i++) {
    n++;
    console.log(`spam ${process.pid} ${n} ${'x'.repeat(50)}`);
    if (n % 10 === 0) console.error(`spam ${process.pid} ${n}`);
  }
  if (n < total) return setImmediate(burst);
  require('fs').writeFileSync(`${process.env.DONE_DIR}/${process.pid}`, String(n));
  process.exit(0);
}
burst();
"""
LINE = re.compile(r": spam (\d+) (\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--lines", type=int, default=100_000, help="stdout lines per process")
    parser.add_argument("--max-bytes", type=int, default=256 * 1024)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="nextdeploy-logrot-"))
    try:
        release, logs, done = base / "release", base / "logs", base / "done"
        for directory in (release / ".nextdeploy", logs, done):
            directory.mkdir(parents=True)
        shutil.copy(LAUNCHER, release / ".nextdeploy" / "launcher.cjs")
        (release / ".nextdeploy" / "manifest.json").write_text('{"id": "stress", "server": "spam.js"}')
        (release / "spam.js").write_text(SPAM)
        env = {**os.environ, "NEXTDEPLOY_LOG_OUT": str(logs / "out.log"), "NEXTDEPLOY_LOG_ERR": str(logs / "err.log"),
               "NEXTDEPLOY_LOG_MAX_BYTES": str(args.max_bytes), "NEXTDEPLOY_LOG_KEEP": "10000",
               "NEXTDEPLOY_READY_TIMEOUT_MS": "600000", "SPAM_LINES": str(args.lines), "DONE_DIR": str(done)}
        started = time.monotonic()
        processes = [subprocess.Popen(["node", str(release / ".nextdeploy" / "launcher.cjs")], env=env)
                     for _ in range(args.processes)]
        for process in processes:
            process.wait(timeout=600)
        seconds = time.monotonic() - started
        written = {int(path.name): int(path.read_text()) for path in done.iterdir()}
        for stream, step in (("out", 1), ("err", 10)):
            files = sorted(logs.glob(f"{stream}.log*"))
            found: dict[int, list[int]] = defaultdict(list)
            for path in files:
                for match in LINE.finditer(path.read_text()):
                    found[int(match[1])].append(int(match[2]))
            wanted = sum(len(range(step, count + 1, step)) for count in written.values())
            missing = sum(len(set(range(step, count + 1, step)) - set(found[pid])) for pid, count in written.items())
            total = sum(len(ids) for ids in found.values())
            largest = max(path.stat().st_size for path in files)
            print(f"{stream}: written {wanted}, found {total}, missing {missing}, files {len(files)} "
                  f"(rotations {len(files) - 1}), largest {largest} bytes ({largest / args.max_bytes:.1f} x max)")
        megabytes = sum(path.stat().st_size for path in logs.iterdir()) / 1e6
        print(f"{args.processes} processes, {megabytes:.0f} MB in {seconds:.1f} s ({megabytes / seconds:.1f} MB/s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
