"""Options shared by every command, and building a Context from them.

Light to import: a `nextdeploy host ...` command that reads no config (facts, lock) loads neither pydantic nor
the config models; ``make_context`` imports them when a command reads its config."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nextdeploy.core.paths import DEFAULT_CONFIG_NAME

if TYPE_CHECKING:
    from nextdeploy.core.config import Config
    from nextdeploy.core.context import Context

F = TypeVar("F", bound=Callable[..., Any])


def config_option(function: F) -> F:
    return click.option(
        "-c", "--config", "config_path", type=click.Path(path_type=Path), default=Path(DEFAULT_CONFIG_NAME),
        show_default=True, help="The nextdeploy.toml to use.",
    )(function)


def json_option(function: F) -> F:
    return click.option("--json", "json_mode", is_flag=True, help="Print a JSON result for scripts.")(function)


def debug_option(function: F) -> F:
    # Read by cli.main before the command runs; declared here so every command accepts it.
    return click.option("--debug", is_flag=True, expose_value=False, help="Show tracebacks of errors.")(function)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses nan and inf (click's lets nan through every bound: nan < 0 is false)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def lock_timeout_option(function: F) -> F:
    return click.option(
        "--lock-timeout", type=FiniteFloatRange(min=0), default=0, show_default=True,
        help="Seconds to wait for another deploy or rollback to finish before giving up.",
    )(function)


def host_as_option(function: F) -> F:
    return click.option(
        "--as", "as_host", metavar="SSH", default=None,
        help="This host's [[hosts]] entry (its ssh value): a fleet's config applied as that host applies it.",
    )(function)


def make_context(config_path: Path, json_mode: bool = False, dry_run: bool = False,
                 as_host: str | None = None) -> Context:
    from nextdeploy.core.config import load_config

    config = load_config(config_path)
    if as_host is not None:
        config = config.for_host(as_host)
    return context_for(config, json_mode, dry_run)


def context_for(config: Config, json_mode: bool = False, dry_run: bool = False) -> Context:
    from nextdeploy.core.context import Context
    from nextdeploy.core.ui import Reporter
    from nextdeploy.host.executor import DryRunExecutor, LocalExecutor

    reporter = Reporter(json_mode=json_mode)
    executor = DryRunExecutor(reporter.info) if dry_run else LocalExecutor(echo=reporter.info)
    return Context(config, executor, reporter)
