"""The fleet bench (issue 23): `.venv/bin/python bench/fleet.py [--repeat N] [--out DIR] [--publish docs/bench]`,
as root (the test hosts are mount namespaces).

One run: a 3-host fleet and a 1-host fleet, both up for the whole run (the fleet tests' harness: real sshd
hosts, each in its own mount namespace on its own 127.x address, a real nginx in front of each fleet); each
gets the example app v1 (unmeasured: it sets the hosts up), then the same code-only change (v2, v3, ...)
under the same bounded load through its nginx, the two targets one after the other, their order alternating
between repetitions. Per deploy: the wall time of `nextdeploy deploy --json` and its phases, bytes shipped
per host, failed requests, the peak memory of the controller's process tree and of each host's processes by
kind (sampled every 0.1 s from /proc). See bench/README.md ("Fleet bench").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fleet tests' harness: tests/support

from nextdeploy.benchkit.bench import machine  # noqa: E402
from nextdeploy.benchkit.commands import CommandRecord, run_command  # noqa: E402
from nextdeploy.benchkit.fleetfigures import deploy_figures, load_figures, markdown, summary  # noqa: E402
from nextdeploy.benchkit.procmem import (  # noqa: E402
    Grouping,
    Proc,
    Sampler,
    control_dirs,
    controller_kind,
    descendants,
    host_kind,
)
from nextdeploy.demo.exampleapp import copy_example, set_version  # noqa: E402
from support.fleet import LOAD_RATE, Fleet, load_through, running_fleet  # noqa: E402
from support.hosts import missing_host_tools  # noqa: E402
from support.site import tool_env  # noqa: E402

# The health route (3-4 ms of CPU a request), not `/` (about 9 ms: 200 req/s of it would take most of 2 cores
# and the bench would measure CPU starvation; bench/README.md says more).
LOAD_PATH = "/api/health"
DEPLOY_TIMEOUT = 900.0  # seconds for one `nextdeploy deploy`
# The same root on every host of both targets: each test host has its own /srv and its own PID namespace.
ROOT = "/srv/bench"


def about(batch: int) -> str:
    rollout = ("canary 1, batch 1 (the defaults): every host proven at once, then the 3 switch one after the "
               "other" if batch == 1 else
               f"canary 1, then batch {batch}: every host proven at once, then web1 switches alone, then the "
               f"others {batch} at a time")
    return ABOUT + f" Rollout: {rollout}."


ABOUT = ("a 3-host fleet and a 1-host fleet (each its own test hosts and nginx), both up for the whole run; "
         "each gets the example app v1 (unmeasured: it sets the hosts up), then the same code-only change, "
         "the two one after the other (order alternating between repetitions), each under "
         f"{2 * LOAD_RATE:.0f} req/s through its nginx (keep-alive and a new connection per request, "
         f"{LOAD_RATE:.0f} req/s each, on `/api/health`), while every process of the controller's deploy and "
         "of its hosts is sampled every 0.1 s.")


@dataclass
class Target:
    name: str  # "fleet" or "single"
    fleet: Fleet
    app: Path
    config: Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="nextdeploy fleet bench (see bench/README.md)")
    parser.add_argument("--repeat", type=int, default=2, metavar="N",
                        help="measured code-only changes per target (default 2; the order alternates)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output dir (default bench/results)")
    parser.add_argument("--publish", type=Path, default=None, help="also write FLEET.md to this dir (docs/bench)")
    parser.add_argument("--instances", type=int, default=1, help="[server] instances on every host (1)")
    parser.add_argument("--batch", type=int, default=1,
                        help="the 3-host fleet's [rollout] batch (default 1, the default: one host at a time)")
    parser.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir, removed after)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def write_config(fleet: Fleet, base: Path, app: Path, instances: int, batch: int) -> Path:
    """The same config for both targets but for their hosts; defaults but for the health check."""
    return fleet.write_config(base / "nextdeploy.toml", app, root=ROOT, server={"instances": instances},
                              health={"path": "/api/health", "expect_body": '"status":"ok"', "timeout": 30},
                              rollout={"canary": 1, "batch": batch})


def grouping_for(target: Target, deploy_pid: int) -> Callable[[dict[int, Proc]], Grouping]:
    """Which processes a deploy's sample counts: the deploy's tree (and the ssh masters it forked off, found by
    their control dir) as "controller", and every process in the mount namespace of each of its hosts."""
    masters: set[str] = set()
    namespaces = {host.namespace: host.name for host in target.fleet.hosts.hosts}

    def group(table: dict[int, Proc]) -> Grouping:
        found: Grouping = {}
        tree = descendants(table, deploy_pid)
        masters.update(control_dirs(table[pid].command for pid in tree))
        for pid, process in table.items():
            if pid in tree:
                found[pid] = ("controller", controller_kind(process.command))
            elif process.namespace in namespaces:
                found[pid] = (namespaces[process.namespace], host_kind(process.command))
            elif masters and any(master + "/" in process.command for master in masters):
                found[pid] = ("controller", "ssh")
        return found

    return group


def deploy(target: Target, log: Path) -> tuple[CommandRecord, dict[str, Any], dict[str, Any]]:
    """One deploy, sampled from its start to its end: the command's record, its JSON result ({} without one),
    the memory peaks. Its stderr, time-stamped, goes to ``log``."""
    samplers: list[Sampler] = []
    try:
        record = run_command([sys.executable, "-m", "nextdeploy", "deploy", "--json", "-c", str(target.config)],
                             tool_env(), DEPLOY_TIMEOUT,
                             on_start=lambda pid: samplers.append(Sampler(grouping_for(target, pid)).start()))
    finally:
        peaks = {subject: peak.to_json() for sampler in samplers for subject, peak in sampler.stop().items()}
    log.write_text("".join(f"{at - record.started:8.3f} {line}\n" for at, line in record.lines))
    try:
        result = json.loads(record.stdout) if record.stdout.strip() else {}
    except json.JSONDecodeError:
        result = {}
    if record.exit_code != 0:
        tail = [line for _, line in record.lines[-15:]]
        print(f"  {target.name}: deploy exited {record.exit_code}:\n    " + "\n    ".join(tail), flush=True)
    return record, result, peaks


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started_at, started = datetime.now(UTC), time.monotonic()
    meta: dict[str, Any] = {"started": started_at.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                            "command": "bench/fleet.py " + " ".join(sys.argv[1:]),
                            "repeat": args.repeat, "instances": args.instances, "batch": args.batch,
                            "about": about(args.batch), "initial": {}}
    print(f"load average at the start: {meta['machine']['loadavg_start']}", flush=True)
    deploys: list[dict[str, Any]] = []
    with ExitStack() as stack:
        targets = []
        for name, count in (("fleet", 3), ("single", 1)):
            base = work / name
            fleet = stack.enter_context(running_fleet(base, count))
            app = copy_example(base / "app", "v1")
            config = write_config(fleet, base, app, args.instances, args.batch)
            targets.append(Target(name, fleet, app, config))
        for target in targets:
            print(f"{target.name}: v1 (sets the hosts up; not measured)", flush=True)
            record, result, _ = deploy(target, work / f"{target.name}-v1.log")
            meta["initial"][target.name] = {"code": record.exit_code, "wall_seconds": round(record.seconds, 3),
                                            "seconds": result.get("seconds")}
            if record.exit_code != 0:
                raise SystemExit(f"bench: the first deploy to the {target.name} target failed "
                                 f"(exit {record.exit_code}); see {work / (target.name + '-v1.log')}")
        for repeat in range(args.repeat):
            version = f"v{repeat + 2}"
            for target in targets if repeat % 2 == 0 else targets[::-1]:
                set_version(target.app, version)
                print(f"{target.name}: {version} under load", flush=True)
                with load_through(target.fleet, LOAD_PATH) as loads:
                    record, result, peaks = deploy(target, work / f"{target.name}-{version}.log")
                lines = [(at - record.started, line) for at, line in record.lines]
                figures = deploy_figures(target.name, target.fleet.hosts.names, result, record.seconds,
                                         record.exit_code, load_figures(loads), peaks, lines)
                figures["repeat"] = repeat + 1
                figures["version"] = version
                deploys.append(figures)
                print(f"  exit {record.exit_code}, {record.seconds:.1f} s, {figures['failed']} failed of "
                      f"{figures['requests']}, shipped {figures['ship_fraction_max']}", flush=True)
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    return {"meta": meta, "summary": summary(deploys), "deploys": deploys}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_host_tools():
        print(f"bench: error: the test hosts need {', '.join(missing)} (scripts/test installs them)",
              file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="nd-fleet-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, work)
    except KeyboardInterrupt:
        print("bench: interrupted (everything it started was stopped)", file=sys.stderr)
        return 130
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = markdown(results)
    (args.out / "FLEET.md").write_text(text)
    if args.publish is not None:
        args.publish.mkdir(parents=True, exist_ok=True)
        (args.publish / "FLEET.md").write_text(text)
    print(text)
    return 0 if results["summary"]["deploys_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
