"""The exception tree and the exit codes it maps to.

Every expected failure raises a subclass of ``NextdeployError``. The CLI turns it into one line
(``error: <what is wrong>`` plus ``hint: <how to fix it>``) and the class's exit code, in exactly one
place (``nextdeploy.cli.main``). Anything else is a bug and shows a traceback only with ``--debug``.

    NextdeployError
    ├── ConfigError            bad or missing nextdeploy.toml, bad CLI arguments
    ├── ProjectError           the source is not a deployable Next.js app
    ├── ToolMissingError       node, pnpm, npm, yarn, git or pm2 not found
    ├── HostPathError          a path on the host is not writable or has the wrong type
    ├── BuildError             install or build failed
    ├── ReleaseError           the assembled release is incomplete or invalid
    ├── PreflightError         the release failed its health gate before taking traffic
    ├── ActivationError        failed after the switch; the previous release was put back
    ├── RollbackError          no release to roll back to, or the rollback itself failed
    ├── LockError              another deploy holds the lock
    ├── ReleaseNotFoundError   no such release
    ├── Pm2Error               PM2 misbehaved
    ├── PortError              the public port is taken by another process, or cannot be listened on
    ├── NameTakenError         PM2 runs another app under the app's name
    ├── DiskFullError          no space left (or over quota) on the disk of the deploy root
    ├── HookError              the before_activate hook failed or timed out; nothing live changed
    ├── SshError               a host unreachable or refusing us over SSH (``nextdeploy.remote.errors``)
    └── PlatformError          a host's OS, CPU, libc or Node major differs from where the release is built

    Interrupted (a KeyboardInterrupt)  Ctrl-C, SIGTERM or SIGHUP: exit code 130
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes: one per kind of failure, stable for scripts."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2  # click's own code for bad arguments
    CONFIG = 3
    PROJECT = 4
    TOOL_MISSING = 5
    HOST_PATH = 6
    BUILD_FAILED = 7
    RELEASE_INVALID = 8
    PREFLIGHT_FAILED = 9
    ROLLED_BACK = 10
    ROLLBACK_FAILED = 11
    LOCKED = 12
    NOT_FOUND = 13
    PM2 = 14
    PORT = 15
    NAME_TAKEN = 16
    DISK_FULL = 17
    HOOK_FAILED = 18
    SSH = 19
    PLATFORM = 20
    ABORTED = 21  # a fleet's controller said `abort` (or went away) at the gate: nothing switched
    INTERRUPTED = 130


class NextdeployError(Exception):
    """Base of every expected failure: a message, an optional hint, an exit code."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra lines shown under the message (every config error, a build log tail...).
        self.details = details or []


class HostFailedError(NextdeployError):
    """A host of a fleet failed a step: its own error, named by host and step, with the exit code the same
    failure has on one machine (a preflight that fails on a host exits 9, as locally)."""

    def __init__(self, host: str, step: str, code: int, message: str, hint: str | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(f"{host} failed at {step}: {message}", hint, details)
        self.host, self.step = host, step
        known = {int(member) for member in ExitCode} - {int(ExitCode.OK)}
        self.exit_code = ExitCode(code) if code in known else ExitCode.UNEXPECTED


class ConfigError(NextdeployError):
    exit_code = ExitCode.CONFIG


class ProjectError(NextdeployError):
    exit_code = ExitCode.PROJECT


class ToolMissingError(NextdeployError):
    exit_code = ExitCode.TOOL_MISSING


class HostPathError(NextdeployError):
    exit_code = ExitCode.HOST_PATH


class BuildError(NextdeployError):
    exit_code = ExitCode.BUILD_FAILED


class ReleaseError(NextdeployError):
    exit_code = ExitCode.RELEASE_INVALID


class PreflightError(NextdeployError):
    exit_code = ExitCode.PREFLIGHT_FAILED


class ActivationError(NextdeployError):
    exit_code = ExitCode.ROLLED_BACK


class RollbackError(NextdeployError):
    exit_code = ExitCode.ROLLBACK_FAILED


class LockError(NextdeployError):
    exit_code = ExitCode.LOCKED


class ReleaseNotFoundError(NextdeployError):
    exit_code = ExitCode.NOT_FOUND


class Pm2Error(NextdeployError):
    exit_code = ExitCode.PM2


class PortError(NextdeployError):
    exit_code = ExitCode.PORT


class NameTakenError(NextdeployError):
    exit_code = ExitCode.NAME_TAKEN


class DiskFullError(NextdeployError):
    exit_code = ExitCode.DISK_FULL


class HookError(NextdeployError):
    """The ``before_activate`` hook failed or timed out: the release was rejected, nothing live changed."""

    exit_code = ExitCode.HOOK_FAILED


class GateAborted(NextdeployError):
    """``host activate --gate``: the controller said ``abort`` (or went away, or never answered) while the
    release waited, proven, at the gate. Its held workers were deleted, the live release served throughout;
    the release did not fail (logged ``refused``, not the sticky ``failed``)."""

    exit_code = ExitCode.ABORTED


class PlatformError(NextdeployError):
    """A release built here would not run on a host: another OS, CPU, libc family or Node major (native
    modules such as sharp are built for one platform)."""

    exit_code = ExitCode.PLATFORM


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: stop now, but clean up like Ctrl-C does (see ``nextdeploy.core.interrupts``).

    A KeyboardInterrupt, not an Exception: ``except Exception`` must not swallow it. ``message`` says
    what the interrupted run left live, once something knows (the activation does).
    """

    def __init__(self, signal_name: str = "SIGINT", message: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.message = message or f"interrupted by {signal_name}"
        self.explained = message is not None  # the message says what the interrupted run left live


def stopped_by(interrupt: KeyboardInterrupt) -> str:
    """The signal behind an interrupt: Python's own KeyboardInterrupt is Ctrl-C's SIGINT."""
    return interrupt.signal_name if isinstance(interrupt, Interrupted) else "SIGINT"
