"""The fleet bench's figures (bench/fleet.py): one deploy's from its ``--json`` result, its load and its memory
peaks; the fleet's against the single host's (the targets of issue 23); and the Markdown of a run. Pure.

A deploy's time is split from its JSON: ``setup`` (the hosts checked, the config sent, every host's status
read), ``build`` (``build_seconds``: export, install, ``next build``, assembly; ``next_build`` is the
``build`` step alone), ``ship``, ``prepare``, ``rollout`` (every host proven at once, then the waves one
after the other: each wave as long as its slowest host's switch), and ``other``: the rest of the command's
own ``seconds`` (the fleet lock, before the first step on a fleet set up, the mixed-fleet check, the key's
decision, dropping the controller's older release). ``outside`` is the wall time around it: Python's
start-up, closing the ssh connections.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

MB = 1e6
TIME_RATIO_TARGET = 1.5  # 3 hosts in at most 1.5x one host's time
SHIP_FRACTION_TARGET = 0.10  # a code-only change sends under 10% of the release to each host
SETUP_STEPS = ("fleet-setup", "fleet-config", "fleet-status")
# A progress line of ``--json`` on stderr: a step starts (``... [name] title``) or ends (``ok  [name] ...``).
STEP_LINE = re.compile(r"^(?P<mark>\.\.\.|ok|FAILED) +\[(?P<name>[a-z][a-z-]*)\] ")
WAVE_LINE = re.compile(r"^(prove .* at once|canary: |batch \d+: )")


def step_seconds(steps: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Seconds per step name (summed when a name repeats), from a ``--json`` result's ``steps``."""
    found: dict[str, float] = {}
    for step in steps:
        if step.get("name"):
            found[step["name"]] = found.get(step["name"], 0.0) + float(step.get("seconds") or 0.0)
    return found


def gaps(lines: Sequence[tuple[float, str]], minimum: float = 0.05) -> dict[str, float]:
    """The time between a step's end and the next step's (or the rollout's first wave's) start, from
    time-stamped stderr lines (seconds since the command started, line): ``{"after <step>": seconds}``, where
    the untimed work goes (the fleet lock after ``fleet-setup`` when a host had to be set up, a mixed fleet's
    convergence and the key's decision after ``fleet-status``, ...). Gaps under ``minimum`` are left out."""
    found: dict[str, float] = {}
    ended: tuple[float, str] | None = None
    for at, line in lines:
        step = STEP_LINE.match(line)
        starts = (step is not None and step["mark"] == "...") or WAVE_LINE.match(line) is not None
        if starts and ended is not None:
            if at - ended[0] >= minimum:
                key = f"after {ended[1]}"
                found[key] = round(found.get(key, 0.0) + at - ended[0], 3)
            ended = None
        if step is not None and step["mark"] != "...":
            ended = (at, step["name"])
    return found


def rollout_seconds(result: dict[str, Any]) -> float:
    """Every host proven at once (a gated rollout's phase 1: ``prove_seconds``), then the waves one after the
    other, each as long as its slowest host's activation (its switch, after its proof)."""
    seconds = {host["host"]: float(host.get("seconds") or 0.0) for host in result.get("hosts", [])}
    proving = float(result.get("prove_seconds") or 0.0)
    waves = result.get("waves", [])
    return proving + sum(max((seconds.get(host, 0.0) for host in wave), default=0.0) for wave in waves)


def phases(result: dict[str, Any], wall: float) -> dict[str, float]:
    """Where a fleet deploy's time went (see the module's doc), in seconds."""
    steps = step_seconds(result.get("steps", []))
    split = {
        "setup": sum(steps.get(name, 0.0) for name in SETUP_STEPS),
        "build": float(result.get("build_seconds") or 0.0),
        "ship": steps.get("fleet-ship", 0.0),
        "prepare": steps.get("fleet-prepare", 0.0),
        "rollout": rollout_seconds(result),
    }
    total = float(result.get("seconds") or 0.0)
    split["other"] = max(0.0, total - sum(split.values()))
    split["next_build"] = steps.get("build", 0.0)
    split["outside"] = max(0.0, wall - total)
    return {name: round(value, 3) for name, value in split.items()}


def ship_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per host: bytes sent, the release's size, their ratio."""
    shipped = []
    for host in result.get("hosts", []):
        ship = host.get("ship") or {}
        sent, size = int(ship.get("bytes_sent") or 0), int(ship.get("release_bytes") or 0)
        shipped.append({"host": host["host"], "bytes_sent": sent, "release_bytes": size,
                        "fraction": round(sent / size, 5) if size else None,
                        "files_transferred": ship.get("files_transferred"), "seconds": ship.get("seconds")})
    return shipped


def load_figures(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per client kind (``load_through``'s results: LoadResult-like objects): requests, failed, the rate
    reached, the failures by kind."""
    figures = {}
    for mode, load in results.items():
        figures[mode] = {"requests": load.total, "failed": load.failed,
                         "rate": round(load.total / load.elapsed, 1) if load.elapsed else None,
                         "errors": dict(load.errors())}
    return figures


def memory_figure(peaks: dict[str, Any], subject: str, kind: str | None = None, single: bool = False) -> int | None:
    """A peak in bytes from a sampler's JSON (``{subject: SubjectPeak.to_json()}``): the subject's total, or one
    kind's summed peak (or its largest single process with ``single``); None when never seen."""
    found = peaks.get(subject)
    if found is None:
        return None
    if kind is None:
        return int(found["peak_total_bytes"])
    kind_peak = found["kinds"].get(kind)
    if kind_peak is None:
        return None
    return int(kind_peak["peak_single_bytes" if single else "peak_sum_bytes"])


def cpu_figure(peaks: dict[str, Any], subject: str, kinds: Sequence[str] | None = None) -> float | None:
    """CPU seconds a subject's processes (or those of ``kinds``) used during the deploy; None when never seen."""
    found = peaks.get(subject)
    if found is None:
        return None
    if kinds is None:
        return float(found.get("cpu_seconds", 0.0))
    return round(sum(float(found["kinds"].get(kind, {}).get("cpu_seconds", 0.0)) for kind in kinds), 2)


def deploy_figures(target: str, hosts: Sequence[str], result: dict[str, Any], wall: float, code: int,
                   loads: dict[str, Any], memory: dict[str, Any],
                   lines: Sequence[tuple[float, str]] = ()) -> dict[str, Any]:
    """Everything one measured deploy gives: ``target`` is "fleet" or "single", ``hosts`` its host names."""
    shipped = ship_figures(result)
    fractions = [host["fraction"] for host in shipped if host["fraction"] is not None]
    host_peaks = {host: {kind: memory_figure(memory, host, kind) for kind in ("nextdeploy", "rsync", "pm2", "app")}
                  | {"total": memory_figure(memory, host)} for host in hosts}
    return {
        "target": target, "hosts": list(hosts), "code": code, "release": result.get("release"),
        "wall_seconds": round(wall, 3), "seconds": result.get("seconds"), "phases": phases(result, wall),
        "gaps": gaps(lines),
        "activate_seconds": {host["host"]: host.get("seconds") for host in result.get("hosts", [])},
        "ship": shipped, "ship_fraction_max": max(fractions) if fractions else None,
        "load": loads, "failed": sum(load["failed"] for load in loads.values()),
        "requests": sum(load["requests"] for load in loads.values()),
        "controller_memory": {
            "total": memory_figure(memory, "controller"),
            "build": memory_figure(memory, "controller", "build"),
            "build_single": memory_figure(memory, "controller", "build", single=True),
            "nextdeploy": memory_figure(memory, "controller", "nextdeploy"),
            "ssh": memory_figure(memory, "controller", "ssh"),
        },
        "host_memory": host_peaks,
        "controller_cpu": {"total": cpu_figure(memory, "controller"),
                           "build": cpu_figure(memory, "controller", ["build"])},
        "host_cpu": {host: {"total": cpu_figure(memory, host), "app": cpu_figure(memory, host, ["app"]),
                            "nextdeploy": cpu_figure(memory, host, ["nextdeploy", "rsync"]),
                            "pm2": cpu_figure(memory, host, ["pm2"])} for host in hosts},
        "memory": memory,
    }


def _median(values: Iterable[float | int | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def _same_build_ratio(fleet_rest: float | None, single_rest: float | None, build: float | None) -> float | None:
    """The time ratio had both builds taken the median build time of the run: the build is the same work for
    both targets, and on a shared machine the figure that varies most from one deploy to the next."""
    if fleet_rest is None or single_rest is None or build is None:
        return None
    return _ratio(fleet_rest + build, single_rest + build)


def summary(deploys: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fleet's measured deploys against the single host's (medians over repetitions), with the targets."""
    def of(target: str) -> list[dict[str, Any]]:
        return [deploy for deploy in deploys if deploy["target"] == target]

    fleet, single = of("fleet"), of("single")
    fleet_wall = _median(deploy["wall_seconds"] for deploy in fleet)
    single_wall = _median(deploy["wall_seconds"] for deploy in single)
    fraction = max((deploy["ship_fraction_max"] for deploy in fleet if deploy["ship_fraction_max"] is not None),
                   default=None)
    failed = sum(deploy["failed"] for deploy in deploys)
    build_peak = _median(deploy["controller_memory"]["build"] for deploy in deploys)
    host_nextdeploy = max((peak["nextdeploy"] for deploy in fleet for peak in deploy["host_memory"].values()
                           if peak["nextdeploy"] is not None), default=None)
    time_ratio = _ratio(fleet_wall, single_wall)
    # The same without the build: the same work on both, but the one figure a busy machine moves most.
    fleet_rest = _median(deploy["wall_seconds"] - deploy["phases"]["build"] for deploy in fleet)
    single_rest = _median(deploy["wall_seconds"] - deploy["phases"]["build"] for deploy in single)
    memory_ratio = _ratio(host_nextdeploy, build_peak)
    return {
        "fleet_wall_seconds": fleet_wall, "single_wall_seconds": single_wall,
        "time_ratio": time_ratio, "time_ratio_met": _le(time_ratio, TIME_RATIO_TARGET),
        "fleet_beyond_build_seconds": fleet_rest, "single_beyond_build_seconds": single_rest,
        "beyond_build_ratio": _ratio(fleet_rest, single_rest),
        "build_seconds": {target: _median(deploy["phases"]["build"] for deploy in of(target))
                          for target in ("fleet", "single")},
        "median_build_seconds": _median(deploy["phases"]["build"] for deploy in deploys),
        "same_build_ratio": _same_build_ratio(fleet_rest, single_rest,
                                              _median(deploy["phases"]["build"] for deploy in deploys)),
        "ship_fraction_max": fraction,
        "ship_fraction_met": None if fraction is None else fraction < SHIP_FRACTION_TARGET,
        "failed": failed, "requests": sum(deploy["requests"] for deploy in deploys), "failed_met": failed == 0,
        "build_peak_bytes": build_peak, "host_nextdeploy_peak_bytes": host_nextdeploy,
        "host_to_build_memory_ratio": memory_ratio,
        "deploys_ok": all(deploy["code"] == 0 for deploy in deploys),
    }


# Markdown ----------------------------------------------------------------------------------------------

def _mb(value: float | int | None) -> str:
    return "–" if value is None else f"{value / MB:.0f}"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _verdict(met: bool | None) -> str:
    return "–" if met is None else ("met" if met else "**missed**")


def targets_table(summary: dict[str, Any]) -> list[str]:
    return [
        "| figure | measured | target | verdict |",
        "|---|---|---|---|",
        f"| total time, 3 hosts / 1 host (wall, median) | {_s(summary['fleet_wall_seconds'])} s / "
        f"{_s(summary['single_wall_seconds'])} s = **{summary['time_ratio'] or '–'}×** | ≤ {TIME_RATIO_TARGET}× | "
        f"{_verdict(summary['time_ratio_met'])} |",
        f"| the same beyond the build (wall − build, median) | {_s(summary['fleet_beyond_build_seconds'])} s / "
        f"{_s(summary['single_beyond_build_seconds'])} s = {summary['beyond_build_ratio'] or '–'}× | – | – |",
        f"| total time ratio, both builds at the run's median build time "
        f"({_s(summary['median_build_seconds'])} s) | {summary['same_build_ratio'] or '–'}× | ≤ {TIME_RATIO_TARGET}× | "
        f"{_verdict(_le(summary['same_build_ratio'], TIME_RATIO_TARGET))} |",
        f"| bytes sent per host, code-only change (worst host) | **{_pct(summary['ship_fraction_max'])}** of the "
        f"release | < {SHIP_FRACTION_TARGET:.0%} | {_verdict(summary['ship_fraction_met'])} |",
        f"| failed requests (every measured deploy) | **{summary['failed']}** of {summary['requests']} | 0 | "
        f"{_verdict(summary['failed_met'])} |",
        f"| a host's nextdeploy peak / the build's peak | {_mb(summary['host_nextdeploy_peak_bytes'])} MB / "
        f"{_mb(summary['build_peak_bytes'])} MB = **{summary['host_to_build_memory_ratio'] or '–'}** | "
        "a small fraction | – |",
    ]


def deploys_table(deploys: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| # | deploy | exit | wall s | setup | build (next build) | ship | prepare | rollout | other | outside "
        "| untimed gaps ≥ 0.2 s | sent per host | failed / requests "
        "| controller peak MB: tree / build / nextdeploy / ssh | CPU s: controller (build) / hosts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for deploy in deploys:
        phase, memory, cpu = deploy["phases"], deploy["controller_memory"], deploy["controller_cpu"]
        hosts_cpu = sum(host["total"] or 0.0 for host in deploy["host_cpu"].values())
        untimed = ", ".join(f"{name} {seconds:.1f}" for name, seconds in deploy["gaps"].items() if seconds >= 0.2)
        sent = ", ".join(f"{host['bytes_sent'] / MB:.2f} MB ({_pct(host['fraction'])})"
                         for host in deploy["ship"])
        lines.append(
            f"| {deploy['repeat']} | {deploy['target']} ({len(deploy['hosts'])} host"
            f"{'s' if len(deploy['hosts']) > 1 else ''}) | {deploy['code']} | {_s(deploy['wall_seconds'])} "
            f"| {_s(phase['setup'])} | {_s(phase['build'])} ({_s(phase['next_build'])}) | {_s(phase['ship'])} "
            f"| {_s(phase['prepare'])} | {_s(phase['rollout'])} | {_s(phase['other'])} | {_s(phase['outside'])} "
            f"| {untimed or '–'} | {sent} | {deploy['failed']} / {deploy['requests']} "
            f"| {_mb(memory['total'])} / {_mb(memory['build'])} / {_mb(memory['nextdeploy'])} / {_mb(memory['ssh'])} "
            f"| {_s(cpu['total'])} ({_s(cpu['build'])}) / {_s(hosts_cpu)} |")
    return lines


def hosts_table(deploys: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| # | deploy | host | activate s | peak MB: nextdeploy / rsync / pm2 / app / all "
             "| CPU s: nextdeploy and rsync / pm2 / app / all |",
             "|---|---|---|---|---|---|"]
    for deploy in deploys:
        for host, peak in deploy["host_memory"].items():
            cpu = deploy["host_cpu"][host]
            lines.append(
                f"| {deploy['repeat']} | {deploy['target']} | {host} | {_s(deploy['activate_seconds'].get(host))} "
                f"| {_mb(peak['nextdeploy'])} / {_mb(peak['rsync'])} / {_mb(peak['pm2'])} / {_mb(peak['app'])} "
                f"/ {_mb(peak['total'])} | {_s(cpu['nextdeploy'])} / {_s(cpu['pm2'])} / {_s(cpu['app'])} "
                f"/ {_s(cpu['total'])} |")
    return lines


def builds_note(deploys: Sequence[dict[str, Any]]) -> str:
    """How much the build moved in the run: the reason for the ratio with equal builds."""
    builds = sorted(deploy["phases"]["build"] for deploy in deploys)
    if not builds:
        return ""
    return (f"The build is the same work for both targets (the same change, each controller with its own warm "
            f"build dir), but it took {builds[0]:.1f}-{builds[-1]:.1f} s in this run's deploys: `next build` runs "
            "at niceness 10, so other work on the machine slows it most. The third line takes it out of the "
            "comparison: each target's time beyond its build, plus the run's median build.")


def markdown(results: dict[str, Any]) -> str:
    meta, deploys = results["meta"], results["deploys"]
    machine = meta["machine"]
    head = [
        "# nextdeploy fleet bench", "",
        f"{meta['started']} on {machine['cpus']} CPUs ({machine['cpu']}), node {machine['node']}, "
        f"pm2 {machine['pm2']}, next {machine['next']}; code {machine['git']}; {meta['duration_s'] / 60:.1f} min; "
        f"load average {', '.join(f'{value:.2f}' for value in machine['loadavg_start'])} at the start, "
        f"{', '.join(f'{value:.2f}' for value in meta['loadavg_end'])} at the end. "
        f"Command: `{meta['command']}`. Generated by `bench/fleet.py`; see `bench/README.md`.", "",
        f"One run: {meta['about']}", "",
        "## Targets (issue 23)", "", *targets_table(results["summary"]), "", builds_note(deploys), "",
        "## Every measured deploy (a code-only change, under load)", "",
        "Seconds. *setup*: the hosts checked, the config sent, their releases and key files read; *build*: "
        "export, install, assembly and `next build` (in brackets); *rollout*: the waves one after the other; "
        "*other*: the rest, in the gaps between steps: the fleet lock (before the first step; after fleet-setup "
        "when a host had to be set up first), a mixed fleet's "
        "convergence and the key (after fleet-status), moving the controller's previous build to its trash "
        "(after fleet-prepare); *outside*: "
        "Python's start-up and the ssh connections' close. Controller "
        "peak: RSS of the deploy's whole process tree (its `next build` children and ssh connections included) "
        "summed at one sample, sampled every 0.1 s. CPU: user + system seconds used during the deploy by the "
        "controller's tree (its build) and by every process of the target's hosts (their apps serving the load "
        "included).", "",
        *deploys_table(deploys), "",
        "## Each host's peak memory and CPU during the deploy (RSS sampled every 0.1 s, by kind)", "",
        "*nextdeploy*: the host's `nextdeploy host ...` processes (the fleet lock's holder included); *rsync*: "
        "the receiving end of the ship; *pm2*: the daemon and its CLI; *app*: the app's workers (old and new).", "",
        *hosts_table(deploys), "",
    ]
    return "\n".join(head)
