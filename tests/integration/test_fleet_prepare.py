"""Issue 23, item 4: the fleet's one Server Actions key, placed on real sshd hosts (tests/support/hosts.py)
over the real ssh client: sent on stdin only, 0600 on every host, equal everywhere (checked by hash)."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from nextdeploy.core.errors import ExitCode, HostPathError
from nextdeploy.fleet.prepare import key_digest, prepare_key
from nextdeploy.remote.argv import SshSettings
from nextdeploy.remote.ssh import SshTransport
from support.hosts import Hosts, hosts_or_skip

pytestmark = pytest.mark.integration

ROOT = "/srv/app"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    with hosts_or_skip(tmp_path_factory.mktemp("hosts")) as started:
        yield started


def test_one_key_on_every_host_never_on_a_command_line(hosts: Hosts, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        ran.append([str(part) for part in argv])
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    roots = {name: ROOT for name in hosts.names}
    with SshTransport(SshSettings(config_file=hosts.ssh_config)) as transport:
        key, choice = prepare_key(transport, roots)
        print(choice.to_json())
        assert choice.source == "generated" and choice.install == tuple(hosts.names)
        for host in hosts.hosts:
            file = host.path(f"{ROOT}/shared/server-actions.key")
            assert file.read_text() == key + "\n" and stat.S_IMODE(file.stat().st_mode) == 0o600
        assert ran and all(key not in " ".join(argv) for argv in ran)
        assert key not in capsys.readouterr().out

        # The next deploy keeps the key the hosts share; a host that lost it gets it back.
        hosts["web2"].path(f"{ROOT}/shared/server-actions.key").unlink()
        again, choice = prepare_key(transport, roots)
        assert again == key and choice.source == "hosts" and choice.install == ("web2",)
        assert key_digest(hosts["web2"].path(f"{ROOT}/shared/server-actions.key").read_text()) == choice.digest

        # A host whose shared dir cannot hold the key: a one-line error naming it.
        hosts["web3"].path(f"{ROOT}/shared/server-actions.key").unlink()
        hosts["web3"].path(f"{ROOT}/shared").rmdir()
        hosts["web3"].path(f"{ROOT}/shared").write_text("")
        with pytest.raises(HostPathError) as raised:
            prepare_key(transport, roots)
        assert "on web3" in raised.value.message and raised.value.exit_code == ExitCode.HOST_PATH
        hosts["web3"].path(f"{ROOT}/shared").unlink()
    assert all(key not in " ".join(argv) for argv in ran)
