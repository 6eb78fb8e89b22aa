"""One fleet command's session: the config, one SSH transport (a shared connection per host), every host's
root, and the calls of ``nextdeploy host ...`` on them, one host or every host at once.

The fleet commands (``fleet.deploy``, rollback, status, ...) are short scripts over a session; what they
decide comes from ``fleet.plan`` (pure), what runs on a host is the host's own nextdeploy (``fleet.hostcall``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nextdeploy.core.config import Config
from nextdeploy.core.ui import Reporter
from nextdeploy.fleet import hostcall
from nextdeploy.fleet.setup import host_root, in_parallel, ssh_settings
from nextdeploy.remote.ssh import SshTransport

T = TypeVar("T")


@dataclass
class FleetSession:
    config: Config
    transport: SshTransport
    reporter: Reporter
    roots: dict[str, str] = field(default_factory=dict)  # host (its ssh value) -> its root, in config order

    @property
    def names(self) -> list[str]:
        """The hosts in the order they switch (config order)."""
        return list(self.roots)

    def call(self, host: str, subcommand: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
        """``nextdeploy host <subcommand>`` on ``host``: its result, or its error raised (``HostFailedError``)."""
        return hostcall.call(self.transport, host, self.roots[host], subcommand, timeout=timeout)

    def start_gated(self, host: str, release: str, *, timeout: float | None = None) -> hostcall.GatedCall:
        """``nextdeploy host activate <release> --gate`` on ``host``, started (``fleet.gated`` talks with it)."""
        return hostcall.GatedCall(self.transport, host, self.roots[host], release, timeout=timeout)

    def send_config(self, config_text: bytes, roots: Mapping[str, str] | None = None) -> None:
        """The fleet's config to every host at once (``<root>/nextdeploy.toml``, 0600), or to every machine of
        ``roots`` (the hosts and a build box). Only under the fleet lock when the command changes what serves:
        the hosts of a running deploy work with that file."""
        targets = dict(self.roots if roots is None else roots)
        self.each(lambda host: hostcall.send_config(self.transport, host, targets[host], config_text), list(targets))

    def each(self, work: Callable[[str], T], hosts: Sequence[str] | None = None) -> dict[str, T]:
        """``work(host)`` on every host (or ``hosts``) at once; raises the first host's error (config order)
        with the others' as detail lines, once every host is done."""
        return in_parallel(list(self.names if hosts is None else hosts), work)

    def call_each(self, subcommand: Sequence[str], hosts: Sequence[str] | None = None, *,
                  timeout: float | None = None) -> dict[str, dict[str, Any]]:
        return self.each(lambda host: self.call(host, subcommand, timeout=timeout), hosts)


@contextmanager
def fleet_session(config: Config, reporter: Reporter) -> Iterator[FleetSession]:
    """A session over ``config``'s hosts; its shared connections are closed at the end."""
    with SshTransport(ssh_settings(config)) as transport:
        yield FleetSession(config, transport, reporter,
                           {host.ssh: host_root(config, host) for host in config.hosts})
