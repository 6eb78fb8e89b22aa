"""Timeline plots (matplotlib, an optional extra: ``pip install 'nextdeploy[plot]'``).

Each timeline shows, per 0.5 s: answered and failed requests per second, latency (p50, p99, max; log
scale), and the deploy steps as shaded spans (build, preflight, switch + reload, verification, rollback).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nextdeploy.core.steps import StepName

BIN_SECONDS = 0.5
PLOT_HINT = "pip install 'nextdeploy[plot]'"

# Stable step name (nextdeploy.core.steps) -> (colour, short label); steps not listed are not drawn.
_STEP_STYLES: dict[str, tuple[str, str]] = {
    StepName.EXPORT: ("#dddddd", ""),
    StepName.INSTALL: ("#dddddd", ""),
    StepName.BUILD: ("#cccccc", "build"),
    StepName.ASSEMBLE: ("#dddddd", ""),
    StepName.PREFLIGHT: ("#f6d365", "preflight"),
    StepName.HELD: ("#f6d365", "preflight"),
    StepName.SWITCH: ("#9ecae1", ""),
    StepName.CUTOVER: ("#6baed6", "cut-over"),
    StepName.RELOAD: ("#6baed6", "reload"),
    StepName.START: ("#6baed6", "start"),
    StepName.RESTART: ("#6baed6", "restart"),
    StepName.VERIFY: ("#c6a4e0", "verify"),
    StepName.ROLLBACK: ("#fc9272", "roll back"),
    StepName.RECOVER: ("#fc9272", "recover"),
}


def plot_available() -> bool:
    """Whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def _style(name: str | None) -> tuple[str, str] | None:
    return _STEP_STYLES.get(name) if name else None


def _draw(axes: Any, latency_axes: Any, run: dict[str, Any], label: str, show_legend: bool) -> None:
    series = run["timeline"][label]
    offset = series["offset"]
    bins = series["bins"]
    times = [offset + b["t"] for b in bins]
    ok_rate = [b["ok"] / BIN_SECONDS for b in bins]
    failed_rate = [b["failed"] / BIN_SECONDS for b in bins]
    for axis in (axes, latency_axes):
        for action in run["actions"]:
            for step in action["steps"]:
                style = _style(step["name"])
                if style is None or step["end"] is None:
                    continue
                axis.axvspan(step["start"], step["end"], color=style[0], alpha=0.6, lw=0)
        for mark in run["marks"]:
            axis.axvline(mark["t"], color="#d62728", ls="--", lw=1)
    axes.bar(times, ok_rate, width=BIN_SECONDS, align="edge", color="#2ca02c", label="answered / s")
    axes.bar(times, failed_rate, width=BIN_SECONDS, align="edge", bottom=ok_rate, color="#d62728",
             label="failed / s")
    axes.set_ylabel("req/s")
    top = max([*(o + f for o, f in zip(ok_rate, failed_rate, strict=True)), 1.0]) * 1.35
    axes.set_ylim(0, top)
    for action in run["actions"]:
        axes.annotate(action["label"], xy=(action["start"], top * 0.97), fontsize=7, va="top")
        for step in action["steps"]:
            style = _style(step["name"])
            if style and style[1] and step["end"] is not None:
                axes.annotate(style[1], xy=(step["start"], top * 0.86), fontsize=6, va="top", rotation=0)
    for mark in run["marks"]:
        axes.annotate(mark["label"], xy=(mark["t"], top * 0.75), fontsize=6, color="#d62728", va="top")
    for key, colour, name in (("p50_ms", "#1f77b4", "p50"), ("p99_ms", "#ff7f0e", "p99"), ("max_ms", "#7f7f7f", "max")):
        values = [b[key] for b in bins]
        latency_axes.plot([t + BIN_SECONDS / 2 for t in times], values, color=colour, lw=1, label=name)
    latency_axes.set_yscale("log")
    latency_axes.set_ylabel("latency ms")
    if show_legend:
        axes.legend(loc="lower left", fontsize=7, ncol=2)
        latency_axes.legend(loc="upper left", fontsize=7, ncol=3)


def _title(run: dict[str, Any], label: str) -> str:
    figures = run["figures"][label]
    spec = next(spec for spec in run["loads"] if spec["label"] == label)
    return (f"{run['strategy']} · {run['scenario']} · {spec['mode']} {spec['rate']:g} req/s {spec['path']} · "
            f"{figures['failed']} failed")


def plot_run(run: dict[str, Any], path: Path, label: str | None = None) -> Path:
    """One run's timeline (its main load) as a PNG or SVG, by ``path``'s suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = label or next(spec["label"] for spec in run["loads"] if spec["label"] != "page")
    figure, (axes, latency_axes) = plt.subplots(2, 1, sharex=True, figsize=(11, 5.5),
                                                gridspec_kw={"height_ratios": [3, 2]})
    _draw(axes, latency_axes, run, label, show_legend=True)
    axes.set_title(_title(run, label), fontsize=9)
    latency_axes.set_xlabel("seconds since the load started")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_overview(rows: Sequence[Sequence[dict[str, Any] | None]], path: Path, label: str = "keepalive",
                  title: str = "") -> Path:
    """A grid of timelines: ``rows`` of runs (None leaves a cell empty), the same client mode in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    figure = plt.figure(figsize=(7.5 * columns, 4.2 * len(rows)))
    grid = figure.add_gridspec(len(rows) * 2, columns, height_ratios=[3, 2] * len(rows))
    for row_index, row in enumerate(rows):
        for column, run in enumerate(row):
            if run is None or label not in run["timeline"]:
                continue
            axes = figure.add_subplot(grid[row_index * 2, column])
            latency_axes = figure.add_subplot(grid[row_index * 2 + 1, column], sharex=axes)
            _draw(axes, latency_axes, run, label, show_legend=row_index == 0 and column == 0)
            axes.set_title(_title(run, label), fontsize=9)
            axes.tick_params(labelbottom=False)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
