"""nextdeploy: zero-downtime deploys of self-hosted Next.js standalone apps under PM2.

The public Python API is exactly what ``__all__`` names: ``load_config``, ``deploy``, ``rollback`` and
``status`` (see ``nextdeploy.api``), their result types, and the error types with their ``ExitCode``.
Everything else, every submodule included, is internal and may change without notice.

``import nextdeploy`` stays cheap (the CLI starts through it): each name is imported on first use.
"""

from __future__ import annotations

import sys

# Not `from typing import TYPE_CHECKING`: typing alone would make `import nextdeploy` 5-10 times slower.
TYPE_CHECKING = False

__version__ = "0.1.0"

# Public name -> the module that defines it.
_SOURCES = {
    "load_config": "nextdeploy.api",
    "deploy": "nextdeploy.api",
    "rollback": "nextdeploy.api",
    "status": "nextdeploy.api",
    "Config": "nextdeploy.core.config",
    "DeployResult": "nextdeploy.procedures.deploy",
    "Status": "nextdeploy.procedures.status",
    "WorkerStatus": "nextdeploy.procedures.status",
    "ExitCode": "nextdeploy.core.errors",
    "NextdeployError": "nextdeploy.core.errors",
    "ConfigError": "nextdeploy.core.errors",
    "ProjectError": "nextdeploy.core.errors",
    "ToolMissingError": "nextdeploy.core.errors",
    "HostPathError": "nextdeploy.core.errors",
    "BuildError": "nextdeploy.core.errors",
    "ReleaseError": "nextdeploy.core.errors",
    "PreflightError": "nextdeploy.core.errors",
    "ActivationError": "nextdeploy.core.errors",
    "RollbackError": "nextdeploy.core.errors",
    "LockError": "nextdeploy.core.errors",
    "ReleaseNotFoundError": "nextdeploy.core.errors",
    "Pm2Error": "nextdeploy.core.errors",
    "PortError": "nextdeploy.core.errors",
    "NameTakenError": "nextdeploy.core.errors",
    "DiskFullError": "nextdeploy.core.errors",
    "HookError": "nextdeploy.core.errors",
    "Interrupted": "nextdeploy.core.errors",
    "SshError": "nextdeploy.remote.errors",
}

__all__ = [
    "ActivationError", "BuildError", "Config", "ConfigError", "DeployResult", "DiskFullError", "ExitCode",
    "HookError", "HostPathError", "Interrupted", "LockError", "NameTakenError", "NextdeployError", "Pm2Error",
    "PortError", "PreflightError", "ProjectError", "ReleaseError", "ReleaseNotFoundError", "RollbackError",
    "SshError", "Status", "ToolMissingError", "WorkerStatus", "__version__", "deploy", "load_config", "rollback",
    "status",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'nextdeploy' has no attribute {name!r}")
    __import__(source)
    value = getattr(sys.modules[source], name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from types import ModuleType
else:
    ModuleType = type(sys)  # without importing types


class _Package(ModuleType):
    """Keeps ``nextdeploy.procedures.deploy`` the public function: importing the internal submodule of the same name
    (``from nextdeploy.procedures.deploy import ...``) would otherwise set the package's attribute to that module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SOURCES and isinstance(value, ModuleType):
            return  # the submodule stays reachable as sys.modules["nextdeploy.procedures.deploy"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from typing import Any

    from nextdeploy.api import deploy, load_config, rollback, status
    from nextdeploy.core.config import Config
    from nextdeploy.core.errors import (
        ActivationError,
        BuildError,
        ConfigError,
        DiskFullError,
        ExitCode,
        HookError,
        HostPathError,
        Interrupted,
        LockError,
        NameTakenError,
        NextdeployError,
        Pm2Error,
        PortError,
        PreflightError,
        ProjectError,
        ReleaseError,
        ReleaseNotFoundError,
        RollbackError,
        ToolMissingError,
    )
    from nextdeploy.procedures.deploy import DeployResult
    from nextdeploy.procedures.status import Status, WorkerStatus
    from nextdeploy.remote.errors import SshError
