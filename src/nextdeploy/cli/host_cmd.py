"""`nextdeploy host ...`: the host boundary (``procedures.boundary``) for a fleet controller, over SSH.

Hidden from --help: a person uses `deploy`, `rollback`, `status`. Each subcommand prints exactly one JSON
object on stdout, ``{"ok": true, "result": {...}, "steps": [...]}`` or ``{"ok": false, "error": {"code":
<exit code>, "kind": <exception class>, "message": ...}}``, and exits with that code; progress goes to
stderr as plain step lines (so does anything a tool run on the way prints).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from nextdeploy.cli.options import (
    config_option,
    debug_option,
    host_as_option,
    lock_timeout_option,
    make_context,
)
from nextdeploy.core.errors import (
    ConfigError,
    DiskFullError,
    ExitCode,
    Interrupted,
    NextdeployError,
    RollbackError,
    stopped_by,
)
from nextdeploy.host.disk import is_disk_full

if TYPE_CHECKING:  # the config's models are imported only by the commands that read a config (not facts, lock)
    from nextdeploy.core.context import Context


@click.group("host", hidden=True)
def host_group() -> None:
    """Host-level procedures for a fleet controller: one JSON object on stdout each."""


# --- the host boundary: status, activate, rollback, start, stop ---------------------------------------------


@host_group.command("status")
@config_option
@host_as_option
@debug_option
def host_status_command(config_path: Path, as_host: str | None) -> None:
    """The live release, its health and each PM2 worker (changes nothing)."""
    from nextdeploy.procedures.boundary import host_status

    run_json(config_path, host_status, as_host)


@host_group.command("activate")
@config_option
@host_as_option
@lock_timeout_option
@debug_option
@click.option("--gate", is_flag=True, help="Once the release is proven, say `nextdeploy: gate ID ready` on stderr "
              "and wait for `go` on stdin before traffic moves (anything else rejects it: exit 21).")
@click.argument("release_id")
def host_activate_command(config_path: Path, as_host: str | None, lock_timeout: float, gate: bool,
                          release_id: str) -> None:
    """Put a release already under releases/ live (checked, verified, saved)."""
    from nextdeploy.activation.gate import stdin_gate
    from nextdeploy.procedures.boundary import activate_release

    def activate(ctx: Context) -> Any:
        if gate:
            ctx.gate = stdin_gate()
        return activate_release(ctx, release_id, lock_timeout=lock_timeout)

    run_json(config_path, activate, as_host)


@host_group.command("rollback")
@config_option
@host_as_option
@lock_timeout_option
@debug_option
@click.option("--to", "target", metavar="ID", help="The release to go back to (default: the previous good one).")
def host_rollback_command(config_path: Path, as_host: str | None, lock_timeout: float,
                          target: str | None) -> None:
    """Put an earlier good release back."""
    from nextdeploy.procedures.boundary import rollback

    def roll_back(ctx: Context) -> Any:
        if target is not None and not target.strip():  # `--to "$ID"` with ID unset: not "the previous one"
            raise RollbackError("--to is empty", hint="give a release id, or leave --to out to go back to the "
                                                      "previous good release")
        return rollback(ctx, to=target, lock_timeout=lock_timeout)

    run_json(config_path, roll_back, as_host)


@host_group.command("prepare")
@config_option
@host_as_option
@debug_option
@click.argument("release_id")
def host_prepare_command(config_path: Path, as_host: str | None, release_id: str) -> None:
    """Make a release shipped under releases/ ready to go live here (checked, linked, logged; nothing live)."""
    from nextdeploy.procedures.prepare import prepare_shipped

    run_json(config_path, lambda ctx: prepare_shipped(ctx, release_id), as_host)


@host_group.command("build")
@config_option
@host_as_option
@debug_option
@click.option("--key-from-stdin", is_flag=True, required=True,
              help="Read the fleet's Server Actions key from stdin, its first line (never from a command "
                   "line); the build stops when stdin then closes.")
@click.option("--revision", metavar="REV", default=None, help="The directory source's revision (git HEAD there).")
@click.option("--build-box", "box", is_flag=True, help="This is a build box: keep only the newest release.")
def host_build_command(config_path: Path, as_host: str | None, key_from_stdin: bool, revision: str | None,
                       box: bool) -> None:
    """Build a release here for the fleet ([build] host), from <root>/source or the git source.

    The key is the first line on stdin; the build stops when stdin closes before it is done (its controller
    went away)."""
    from nextdeploy.fleet.buildhost import build_here, read_key, stop_when_stdin_closes

    def build(ctx: Context) -> Any:
        key = read_key()
        done_watching = stop_when_stdin_closes()
        try:
            return build_here(ctx, key, as_host or "this host", revision, box)
        finally:
            done_watching()

    run_json(config_path, build, as_host)


def _live_command(name: str, summary: str) -> None:
    """``host start`` and ``host stop``: the procedure of that name, with the live lock's timeout."""

    @host_group.command(name, help=summary)
    @config_option
    @host_as_option
    @lock_timeout_option
    @debug_option
    def command(config_path: Path, as_host: str | None, lock_timeout: float) -> None:
        from nextdeploy.procedures import boundary

        procedure = boundary.start if name == "start" else boundary.stop
        run_json(config_path, lambda ctx: procedure(ctx, lock_timeout=lock_timeout), as_host)


_live_command("start", "Serve the live release again (nothing to do when it serves).")
_live_command("stop", "Take the app out of PM2 (releases and `current` kept).")


def run_json(config_path: Path, procedure: Callable[[Context], Any], as_host: str | None = None,
             after: Callable[[Any, IO[str]], None] | None = None) -> None:
    """Run ``procedure`` on this host's context (the config as host ``as_host`` applies it, for a fleet's
    config); print its one JSON object; exit with its code. ``after(result, stdout)``, if given, runs once
    that object is out."""
    made: list[Context] = []

    def run() -> Any:
        made.append(host_context(config_path, as_host))
        return procedure(made[0])

    answer_json(run, lambda: made[0].reporter.steps_json() if made else [], after)


def answer_json(procedure: Callable[[], Any], steps: Callable[[], list[dict[str, Any]]],
                after: Callable[[Any, IO[str]], None] | None = None) -> None:
    """Run ``procedure``; print its one JSON object (its result's ``to_json()``, or its error) with
    ``steps()``; exit with its code. ``after(result, stdout)``, if given, runs once that object is out
    (``host lock`` holds its lock there, ``host logs --follow`` streams on stdout)."""
    with _stdout_to_stderr() as out:
        debug = "--debug" in sys.argv
        try:
            result = procedure()
            document: dict[str, Any] = {"ok": True, "result": result.to_json(), "steps": steps()}
            code = 0
        except (KeyboardInterrupt, Exception) as exc:  # every failure is answered in JSON
            error = _as_error(exc)
            if debug or not isinstance(error, NextdeployError | KeyboardInterrupt):
                import traceback

                traceback.print_exc()
            document, code = failure_document(error)
            document["steps"] = steps()
            for line in document["error"]["lines"]:
                print(line, file=sys.stderr, flush=True)
            del document["error"]["lines"]
        out.write(json.dumps(document, sort_keys=True, default=str) + "\n")
        out.flush()
        if after is not None and code == 0:
            after(result, out)
    sys.exit(code)


def host_context(config_path: Path, as_host: str | None) -> Context:
    ctx = make_context(config_path, json_mode=True, as_host=as_host)
    if ctx.config.hosts:  # a fleet's config without --as: which host's root and hostname would it be?
        raise ConfigError(f"{config_path} lists [[hosts]]: say which of them this host is",
                          hint="pass --as with the ssh value of this host's [[hosts]] entry")
    return ctx


def _as_error(exc: BaseException) -> BaseException:
    if is_disk_full(exc):
        assert isinstance(exc, OSError)
        return DiskFullError(f"the disk is full{f' (writing {exc.filename})' if exc.filename else ''}",
                             hint="free space on that disk, then run the command again")
    return exc


def failure_document(error: BaseException) -> tuple[dict[str, Any], int]:
    """The JSON object of a failed host command, and its exit code (the CLI's codes: ``core.errors``).
    ``error.lines`` holds what goes to stderr (the caller removes it before printing the object)."""
    if isinstance(error, NextdeployError):
        code, message = int(error.exit_code), error.message
        line = f"error: {message}" + (f" (fix: {error.hint})" if error.hint else "")
        lines = [*error.details, line]
        extra: dict[str, Any] = {"hint": error.hint, "details": error.details}
    elif isinstance(error, KeyboardInterrupt):
        code = int(ExitCode.INTERRUPTED)
        message = error.message if isinstance(error, Interrupted) else f"interrupted by {stopped_by(error)}"
        lines, extra = [f"error: {message}"], {}
    else:
        code, message = int(ExitCode.UNEXPECTED), f"unexpected {type(error).__name__}: {error}"
        lines, extra = [f"error: {message} (please report it)"], {}
    return {"ok": False, "error": {"code": code, "kind": type(error).__name__, "message": message, **extra,
                                   "lines": lines}}, code


@contextmanager
def _stdout_to_stderr() -> Iterator[IO[str]]:
    """Stdout carries the JSON object alone: everything else written to it (by us or by a tool we run, which
    inherits file descriptor 1) goes to stderr meanwhile. Under a test's captured stdout: that stream."""
    try:
        real = sys.stdout.fileno() == 1
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        real = False
    if not real:
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(saved, "w", encoding="utf-8")
    try:
        yield out
    finally:
        sys.stdout.flush()
        out.flush()
        os.dup2(saved, 1)
        out.close()




# --- facts (asked before nextdeploy has a config on the host) -----------------------------------------------


@host_group.command("facts")
@click.option("--root", required=True, type=click.Path(path_type=Path),
              help="The deploy root on this host ([server] root, or the host's root).")
def facts_command(root: Path) -> None:
    """What this host is (versions, platform, tools, the root's state), as one JSON object."""
    from nextdeploy.fleet.facts import collect

    click.echo(json.dumps(collect(root)))


# --- the fleet's lock, its releases and logs ----------------------------------------------------------------


@host_group.command("lock")
@host_as_option
@debug_option
@click.option("--root", required=True, type=click.Path(path_type=Path),
              help="The deploy root on this host (the lock is <root>/.fleet.lock; no config needed).")
@click.option("--holder", required=True, help="Who takes the fleet lock (shown to anyone refused).")
@click.option("--facts", "with_facts", is_flag=True,
              help="Answer this host's facts too (as `host facts` does), once the lock is held.")
def host_lock_command(as_host: str | None, root: Path, holder: str, with_facts: bool) -> None:
    """Take this host's fleet lock, answer, and hold it until stdin closes (the controller went away).

    Needs no config: the controller takes the lock before it sends its config, so that a controller
    refused here has changed nothing on the host. A deploy asks --facts: the set-up check of a host
    whose nextdeploy is this one, in the same call."""
    from dataclasses import replace

    from nextdeploy.fleet.facts import collect
    from nextdeploy.fleet.lock import hold_until_stdin_closes, take_host_lock

    held = []

    def take() -> Any:
        lock, result = take_host_lock(root, as_host, holder)
        held.append(lock)
        return replace(result, facts=collect(root)) if with_facts else result

    answer_json(take, list, after=lambda _result, _out: hold_until_stdin_closes(held[0]))


@host_group.command("releases")
@config_option
@host_as_option
@debug_option
def host_releases_command(config_path: Path, as_host: str | None) -> None:
    """The live release, the release log's releases, and the releases complete here that could go live."""
    from nextdeploy.fleet.hostreads import host_releases

    run_json(config_path, host_releases, as_host)


@host_group.command("logs")
@config_option
@host_as_option
@debug_option
@click.option("-n", "--lines", type=click.IntRange(min=0), default=50, help="How many past lines per stream.")
@click.option("-f", "--follow", is_flag=True, help="Then stream the new lines (`out | ...`) until stdin closes.")
def host_logs_command(config_path: Path, as_host: str | None, lines: int, follow: bool) -> None:
    """The last lines of the app's log streams (then, with --follow, the new ones)."""
    from nextdeploy.fleet.hostreads import host_logs
    from nextdeploy.fleet.logfollow import follow_until_stdin_closes

    contexts = []

    def read(ctx: Context) -> Any:
        contexts.append(ctx)
        return host_logs(ctx, lines)

    run_json(config_path, read, as_host,
             after=(lambda _result, out: follow_until_stdin_closes(contexts[0], out)) if follow else None)


