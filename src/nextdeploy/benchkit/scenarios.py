"""The named scenarios of the bench, and which strategies run which.

Each broken variant of the example app fails in exactly one way (``nextdeploy.demo.exampleapp``). The
contract nextdeploy is held to: a good release goes live, a broken one never takes traffic (the
previous release keeps serving), a rollback puts the previous good release back, and none of it
fails a request.
"""

from __future__ import annotations

from nextdeploy.benchkit.engine import NEXTDEPLOY, PM2_RESTART, SEED, RunContext, Scenario
from nextdeploy.core.steps import StepName


def _deploy(variant: str) -> Scenario:
    descriptions = {
        "good": "a code-only change of a good release",
        "crash-at-boot": "the server process exits while starting",
        "never-listens": "the server blocks its event loop before answering anything",
        "health-500": "/api/health answers 500",
        "exit-after-3s": "serves, then the process exits 3 s after start",
        "slow-start": "answers only after 10 s, then works: a slow but good release (needs [health] timeout > 10 s)",
        "page-throws": "/api/health is fine but / answers 500 (caught only by smoke routes: [health] smoke = [\"/\"])",
    }
    expect = "live" if variant in ("good", "slow-start") else "kept"

    def body(context: RunContext) -> None:
        context.deploy(variant)

    return Scenario(variant, descriptions[variant], expect, body)


def _rollback(context: RunContext) -> None:
    context.rollback()


def _back_to_back(context: RunContext) -> None:
    context.deploy("good")
    context.deploy("good")


def _pm2_killed(context: RunContext) -> None:
    context.kill_pm2()
    context.sleep(1.0)
    context.mark("deploy starts (the site is down since pm2 kill)")
    action = context.deploy("good")
    # Down from `pm2 kill` until the deploy starts the app again is expected, not the deploy's doing.
    context.count_from_step_end(action, (StepName.RESTART_LIVE, StepName.START, StepName.RELOAD))


def _worker_killed(context: RunContext) -> None:
    context.deploy("good", on_line=context.kill_worker_during_reload(delay=0.5))


GOOD = _deploy("good")
BROKEN = {variant: _deploy(variant) for variant in
          ("crash-at-boot", "never-listens", "health-500", "exit-after-3s", "page-throws")}
SLOW_START = _deploy("slow-start")
ROLLBACK = Scenario("rollback", "`nextdeploy rollback` to the previous good release", "rolled-back", _rollback,
                    needs_earlier_good=True)
BACK_TO_BACK = Scenario("back-to-back", "two good deploys in a row with no pause", "live", _back_to_back)
PM2_KILLED = Scenario(
    "pm2-killed", "`pm2 kill` (daemon and workers gone), then a deploy; failures count only once the deploy "
    "has started the app again", "live", _pm2_killed)
WORKER_KILLED = Scenario("worker-killed", "SIGKILL one worker 0.5 s into the reload", "live", _worker_killed)

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario for scenario in
    (GOOD, *BROKEN.values(), SLOW_START, ROLLBACK, BACK_TO_BACK, PM2_KILLED, WORKER_KILLED)
}

# Per strategy, in run order. The baselines run the cases that show their behaviour; their broken
# deploys take 60+ s each (the script's 30 x 2 s health loop), so not every case is repeated for them.
PLAN: dict[str, tuple[str, ...]] = {
    # rollback before slow-start: otherwise the slow release is the rollback target and its 10 s boot
    # per worker is what the rollback time measures.
    NEXTDEPLOY.key: ("good", "crash-at-boot", "never-listens", "health-500", "exit-after-3s", "page-throws",
                     "rollback", "slow-start", "back-to-back", "pm2-killed", "worker-killed"),
    SEED.key: ("good", "crash-at-boot", "health-500", "page-throws"),
    PM2_RESTART.key: ("good", "crash-at-boot"),
}
QUICK_PLAN: dict[str, tuple[str, ...]] = {
    NEXTDEPLOY.key: ("good", "crash-at-boot", "rollback"),
    SEED.key: ("good",),
    PM2_RESTART.key: ("good",),
}
