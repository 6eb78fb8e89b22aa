"""Run the zero-downtime bench: `.venv/bin/python bench/run.py [--quick] [--deploys N] [--out bench/results]`.

A thin entry point; the engine is ``nextdeploy.benchkit`` (also used by `nextdeploy demo`). See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from nextdeploy.benchkit.bench import BenchOptions, main_guard, run_bench
from nextdeploy.benchkit.engine import STRATEGIES
from nextdeploy.benchkit.scenarios import SCENARIOS
from nextdeploy.demo.loadgen import Mode

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> BenchOptions:
    parser = argparse.ArgumentParser(description="nextdeploy zero-downtime bench (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="a few scenarios only (about 8 minutes)")
    parser.add_argument("--deploys", type=int, default=2, metavar="N",
                        help="good deploys of nextdeploy per client mode (default 2)")
    parser.add_argument("--baseline-deploys", type=int, default=2, metavar="N",
                        help="good deploys of each baseline per client mode (default 2)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output dir (default bench/results)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of the main load (200)")
    parser.add_argument("--path", default="/api/health", help="path of the main load (/api/health)")
    parser.add_argument("--page-rate", type=float, default=5.0,
                        help="requests per second of the probe of `/` beside the main load (5; 0: none)")
    parser.add_argument("--modes", default="keepalive,new-connection",
                        help="client modes, run one after the other (keepalive,new-connection)")
    parser.add_argument("--concurrent-modes", action="store_true",
                        help="run the client modes at the same time (each at --rate) instead of one after the other")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help=f"strategies to run ({','.join(STRATEGIES)})")
    parser.add_argument("--scenarios", default=None,
                        help=f"only these scenarios (comma-separated; of {','.join(SCENARIOS)})")
    parser.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir, removed at the end)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG timelines")
    parser.add_argument("--publish", type=Path, default=None,
                        help="also copy RESULTS.md and timeline.png to this dir (e.g. docs/bench)")
    parser.add_argument("--reload-at-once", type=int, default=None, metavar="N",
                        help="nextdeploy's [server] reload_at_once (default: its own, 2; 1 = one worker at a time)")
    args = parser.parse_args(argv)
    modes = tuple(mode.strip() for mode in args.modes.split(",") if mode.strip())
    strategies = tuple(key.strip() for key in args.strategies.split(",") if key.strip())
    scenarios = tuple(name.strip() for name in args.scenarios.split(",")) if args.scenarios else None
    for mode in modes:
        if mode not in ("keepalive", "new-connection"):
            parser.error(f"unknown mode {mode!r}")
    for key in strategies:
        if key not in STRATEGIES:
            parser.error(f"unknown strategy {key!r}")
    for name in scenarios or ():
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    return BenchOptions(
        out=args.out, quick=args.quick, good_deploys=args.deploys, baseline_good_deploys=args.baseline_deploys,
        rate=args.rate, path=args.path, page_rate=args.page_rate, modes=cast(tuple[Mode, ...], modes),
        concurrent_modes=args.concurrent_modes,
        strategies=strategies, scenarios=scenarios, work=args.work, plots=not args.no_plots,
        publish=args.publish, reload_at_once=args.reload_at_once,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    return main_guard(lambda: _run(options))


def _run(options: BenchOptions) -> int:
    results = run_bench(options)
    summary = results["summary"]
    print(f"done in {results['meta']['duration_s'] / 60:.1f} min: {options.out / 'RESULTS.md'}")
    print(f"nextdeploy: {summary['our_deploys']} deploys, {summary['contract_failed_requests']} failed requests "
          "in the good/broken/rollback scenarios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
