"""Entry point: the click group, and the one place where errors become exit codes."""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback
from typing import NoReturn

import click

from nextdeploy import __version__
from nextdeploy.core import interrupts
from nextdeploy.core.errors import DiskFullError, ExitCode, Interrupted, NextdeployError, stopped_by
from nextdeploy.host.disk import is_disk_full

# Each command's module, imported only when that command runs (or --help lists it): a `nextdeploy host ...`
# call, run over ssh several times per host and deploy, then loads what it needs and nothing more.
COMMANDS = {
    "init": "nextdeploy.cli.init_cmd:init_command",
    "deploy": "nextdeploy.cli.deploy_cmd:deploy_command",
    "rollback": "nextdeploy.cli.deploy_cmd:rollback_command",
    "releases": "nextdeploy.cli.releases_cmd:releases_command",
    "status": "nextdeploy.cli.status_cmd:status_command",
    "start": "nextdeploy.cli.deploy_cmd:start_command",
    "stop": "nextdeploy.cli.stop_cmd:stop_command",
    "logs": "nextdeploy.cli.logs_cmd:logs_command",
    "demo": "nextdeploy.cli.demo_cmd:demo_command",
    "host": "nextdeploy.cli.host_cmd:host_group",
    "setup": "nextdeploy.cli.setup_cmd:setup_command",
}


class LazyGroup(click.Group):
    """click's lazily loading group: a command's module is imported when the command is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, name = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command) and command.name == cmd_name, (module, name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nextdeploy")
@click.option("--debug", is_flag=True, expose_value=False, help="Show tracebacks of errors.")
def cli() -> None:
    """Zero-downtime deploys of self-hosted Next.js standalone apps under PM2.

    Set up with `nextdeploy init APP_DIR`, then `nextdeploy deploy`.
    """


def format_error(error: NextdeployError) -> list[str]:
    """Detail lines first, then one line saying what is wrong and how to fix it."""
    line = f"error: {error.message}"
    if error.hint:
        line += f" (fix: {error.hint})"
    return [*error.details, line]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map every failure to one message and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    interrupts.install()  # SIGTERM and SIGHUP clean up as Ctrl-C does
    try:
        cli.main(args=args, prog_name="nextdeploy", standalone_mode=False)
    except NextdeployError as error:
        _fail(error, debug)
    except click.exceptions.Abort as abort:
        # click turns a KeyboardInterrupt (so also our Interrupted) into Abort; the cause says more.
        print(f"error: {_interrupted_message(abort.__cause__)}", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as error:
        error.show()
        sys.exit(int(ExitCode.USAGE))
    except KeyboardInterrupt as interrupt:
        print(f"error: {_interrupted_message(interrupt)}", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as error:  # a bug: say so, briefly, unless --debug
        if is_disk_full(error):  # not a bug: wherever it struck (the build's own case says more)
            assert isinstance(error, OSError)
            what = "your disk quota is used up" if error.errno == errno.EDQUOT else "the disk is full"
            where = f" (writing {error.filename})" if error.filename else ""
            _fail(DiskFullError(f"{what}{where}",
                                hint="free space on that disk, then run the command again (`nextdeploy "
                                     "releases` shows what each release takes)"), debug)
        if debug:
            traceback.print_exc()
        else:
            print(f"error: unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback "
                  "and please report it)", file=sys.stderr)
        sys.exit(int(ExitCode.UNEXPECTED))
    sys.exit(0)


def run() -> NoReturn:
    """The console script: ``main``, then end the process without the interpreter's tear-down, which
    spends 30-60 ms freeing what pydantic and click built (the kernel frees it at once). Every file and
    lock is closed by then, and the threads that may still run (a build dir's removal) are daemons that
    would not be waited for anyway. Tests call ``main``, which raises SystemExit as usual."""
    try:
        main()
        code = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more can be said
    os._exit(code)


def _fail(error: NextdeployError, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    for line in format_error(error):
        print(line, file=sys.stderr)
    sys.exit(int(error.exit_code))


def _interrupted_message(cause: BaseException | None) -> str:
    """What an interrupted run says: the signal, and what it left live when the activation knew."""
    if isinstance(cause, Interrupted):
        return cause.message
    if isinstance(cause, KeyboardInterrupt):
        return f"interrupted by {stopped_by(cause)}"
    return "interrupted"
