"""What every step needs: the config, the host paths, the executor, the reporter, the release log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nextdeploy.core.config import Config
from nextdeploy.core.paths import DeployPaths
from nextdeploy.core.releaselog import ReleaseLog
from nextdeploy.core.ui import Reporter
from nextdeploy.host.executor import Executor


@dataclass
class Context:
    config: Config
    executor: Executor
    reporter: Reporter
    # ``host activate --gate``: called with the release id once it is proven, before any traffic moves to it;
    # returns to go on, raises GateAborted to reject it (``activation.gate``). None: no gate.
    gate: Callable[[str], None] | None = None

    @property
    def paths(self) -> DeployPaths:
        return DeployPaths(self.config.root)

    @property
    def log(self) -> ReleaseLog:
        return ReleaseLog(self.paths.log_file)
