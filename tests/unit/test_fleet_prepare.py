"""The fleet's Server Actions key (nextdeploy.fleet.prepare): the choice, and the commands that place it.

The hosts here are dirs of this machine and the "transport" runs each command locally with the argv and
stdin it was given, recording them: the scripts are the real ones, only ssh is left out (the real-ssh test
is tests/integration/test_fleet_prepare.py)."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from nextdeploy.core.errors import ConfigError, HostPathError
from nextdeploy.fleet.prepare import HostKey, choose_key, key_digest, new_key, prepare_key
from nextdeploy.remote.ssh import RemoteResult

KEY_A = new_key()
KEY_B = new_key()


class LocalTransport:
    """Runs the commands meant for a host here, and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...], bytes | None]] = []

    def run(self, host: str, argv: Sequence[str], *, stdin: bytes | None = None,
            timeout: float | None = None) -> RemoteResult:
        self.calls.append((host, tuple(argv), stdin))
        done = subprocess.run(list(argv), input=stdin or b"", capture_output=True, timeout=timeout)
        return RemoteResult(host, tuple(argv), done.returncode, done.stdout, done.stderr)


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, str]:
    return {name: str(tmp_path / name / "root") for name in ("web1", "web2", "web3")}


def key_file(root: str) -> Path:
    return Path(root) / "shared" / "server-actions.key"


def store(root: str, key: str, mode: int = 0o600) -> None:
    key_file(root).parent.mkdir(parents=True, exist_ok=True)
    key_file(root).write_text(key + "\n")
    key_file(root).chmod(mode)


def test_the_choice() -> None:
    none = [HostKey("web1", None), HostKey("web2", None)]
    key, choice = choose_key(none, None, None)
    assert choice.source == "generated" and choice.install == ("web1", "web2") and choice.digest == key_digest(key)
    assert choose_key(none, KEY_A, KEY_B)[0] == KEY_A  # configured wins
    assert choose_key(none, None, KEY_B)[1].source == "controller"
    shared = [HostKey("web1", key_digest(KEY_A), "600"), HostKey("web2", key_digest(KEY_A), "644"),
              HostKey("web3", None)]
    key, choice = choose_key(shared, None, KEY_B)
    assert key == "" and choice.source == "hosts" and choice.from_host == "web1"
    assert choice.install == ("web2", "web3") and choice.differing == ()  # web2: the right key, a wrong mode
    mixed = [HostKey("web1", None), HostKey("web2", key_digest(KEY_B), "600"),
             HostKey("web3", key_digest(KEY_A), "600")]
    _, choice = choose_key(mixed, None, None)
    assert choice.from_host == "web2" and choice.install == ("web1", "web3") and choice.differing == ("web3",)
    assert KEY_A not in str(choice.to_json()) and KEY_B not in str(choice.to_json())


def test_a_new_key_reaches_every_host_on_stdin_only(roots: dict[str, str]) -> None:
    transport = LocalTransport()
    key, choice = prepare_key(transport, roots)  # type: ignore[arg-type]
    assert choice.source == "generated" and set(choice.install) == set(roots)
    for root in roots.values():
        assert key_file(root).read_text() == key + "\n"
        assert stat.S_IMODE(key_file(root).stat().st_mode) == 0o600
        assert not list(key_file(root).parent.glob(".*tmp"))
    assert all(key not in " ".join(argv) for _host, argv, _stdin in transport.calls)
    assert [host for host, _argv, stdin in transport.calls if stdin and key.encode() in stdin] == list(roots)


def test_a_key_the_hosts_share_is_kept_and_a_host_without_it_gets_it(roots: dict[str, str]) -> None:
    store(roots["web1"], KEY_A)
    store(roots["web2"], KEY_A, mode=0o644)
    transport = LocalTransport()
    key, choice = prepare_key(transport, roots, controller=KEY_B)  # type: ignore[arg-type]
    assert key == KEY_A and choice.source == "hosts" and choice.install == ("web2", "web3")
    assert {key_file(root).read_text() for root in roots.values()} == {KEY_A + "\n"}
    assert stat.S_IMODE(key_file(roots["web2"]).stat().st_mode) == 0o600
    again = LocalTransport()
    assert prepare_key(again, roots)[1].install == ()  # type: ignore[arg-type]
    assert not [call for call in again.calls if call[2]]  # nothing sent


def test_a_broken_key_on_a_host_or_an_unwritable_root_is_a_one_line_error(roots: dict[str, str]) -> None:
    store(roots["web1"], "not a key")
    with pytest.raises(ConfigError) as raised:
        prepare_key(LocalTransport(), roots)  # type: ignore[arg-type]
    assert "on web1" in raised.value.message and "delete it on web1" in (raised.value.hint or "")
    assert "not a key" not in raised.value.message
    key_file(roots["web1"]).unlink()
    Path(roots["web2"]).mkdir(parents=True)
    Path(roots["web2"], "shared").write_text("a file where the dir should be")
    with pytest.raises(HostPathError) as raised:
        prepare_key(LocalTransport(), roots)  # type: ignore[arg-type]
    assert "on web2" in raised.value.message
