"""The ssh and rsync command lines, and what ssh's own words mean (nextdeploy.remote.argv and .errors)."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextdeploy.cli.main import format_error
from nextdeploy.core.errors import ConfigError, ExitCode
from nextdeploy.remote.argv import (
    Destination,
    SshSettings,
    control_argv,
    parse_destination,
    parse_rsync_stats,
    remote_command,
    rsync_argv,
    ssh_argv,
)
from nextdeploy.remote.errors import (
    HostKeyError,
    HostUnreachableError,
    KeyRefusedError,
    classify_ssh_failure,
    unrecognised_ssh_failure,
)
from nextdeploy.remote.ssh import SshTransport

CONTROL = Path("/tmp/nd-ssh-x")
COMMON = ["-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o", "ControlPath=/tmp/nd-ssh-x/%C",
          "-o", "ControlPersist=60"]
DEFAULTS = ["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR"]


@pytest.mark.parametrize(("text", "expected"), [
    ("web1", Destination("web1", "web1")),
    ("deploy@web2.example.com", Destination("deploy@web2.example.com", "web2.example.com", "deploy")),
    ("deploy@10.0.0.11:2222", Destination("deploy@10.0.0.11:2222", "10.0.0.11", "deploy", 2222)),
    ("[2001:db8::1]:22", Destination("[2001:db8::1]:22", "2001:db8::1", None, 22)),
])
def test_destinations(text: str, expected: Destination) -> None:
    assert parse_destination(text) == expected


@pytest.mark.parametrize("text", ["", "-oProxyCommand=x", "web1:0", "web1:65536", "a b", "web1;rm", "@web1",
                                  "user@", "web1:port", "ssh://web1"])
def test_bad_destinations_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_destination(text)
    assert repr(text) in raised.value.message and raised.value.hint


def test_ssh_argv() -> None:
    settings = SshSettings(config_file=Path("/c/ssh_config"), options=("-o", "ProxyJump=bastion"))
    assert ssh_argv(settings, CONTROL, parse_destination("deploy@web2:2222"), ["ls", "-l", "/srv/my app"]) == [
        "ssh", "-F", "/c/ssh_config", *COMMON, "-p", "2222", "-o", "ProxyJump=bastion", *DEFAULTS,
        "--", "deploy@web2", "ls -l '/srv/my app'"]
    assert ssh_argv(SshSettings(), CONTROL, parse_destination("web1"), ["true"]) == [
        "ssh", *COMMON, *DEFAULTS, "--", "web1", "true"]
    assert control_argv(SshSettings(), CONTROL, parse_destination("web1"), "check") == [
        "ssh", *COMMON, *DEFAULTS, "-O", "check", "--", "web1"]


def test_the_users_options_come_before_the_defaults_they_may_override() -> None:
    argv = ssh_argv(SshSettings(options=("-o", "ConnectTimeout=30")), CONTROL, parse_destination("web1"), ["true"])
    # ssh keeps the first value an option gets.
    assert argv.index("ConnectTimeout=30") < argv.index("ConnectTimeout=10")
    assert argv.index("BatchMode=yes") < argv.index("ConnectTimeout=30")


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))))
def test_the_remote_command_is_the_argv_for_a_posix_shell(argv: list[str]) -> None:
    assert shlex.split(remote_command(argv)) == argv


def test_rsync_argv() -> None:
    argv = rsync_argv(SshSettings(), CONTROL, parse_destination("deploy@web2:2222"), Path("/b/release"),
                      "/srv/app/releases/r2/", link_dest="/srv/app/releases/r1")
    assert argv[:5] == ["rsync", "--archive", "--stats", "--checksum", "--link-dest=/srv/app/releases/r1"]
    assert argv[5] == "-e" and shlex.split(argv[6]) == ["ssh", *COMMON, "-p", "2222", *DEFAULTS]
    assert argv[7:] == ["/b/release/", "deploy@web2:/srv/app/releases/r2/"]
    plain = rsync_argv(SshSettings(), CONTROL, parse_destination("[::1]"), Path("/b"), "/t", checksum=False,
                       delete=True)
    assert plain[:4] == ["rsync", "--archive", "--stats", "--delete"] and plain[-1] == "[::1]:/t/"


RSYNC_STATS = """
Number of files: 43 (reg: 41, dir: 2)
Number of created files: 0
Number of regular files transferred: 1
Total file size: 800,018 bytes
Literal data: 18 bytes
Matched data: 0 bytes
Total bytes sent: 1,453
Total bytes received: 152

sent 1,453 bytes  received 152 bytes  3,210.00 bytes/sec
"""


def test_rsync_stats() -> None:
    stats = parse_rsync_stats(RSYNC_STATS)
    assert (stats.bytes_sent, stats.literal_bytes, stats.files_transferred, stats.bytes_received) == (1453, 18, 1, 152)
    with pytest.raises(ValueError, match="Total bytes sent"):
        parse_rsync_stats("sent 1 bytes")


# ssh's own words (OpenSSH 9.2), as the integration tests get them.
CHANGED_KEY = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Offending ED25519 key in /home/me/.ssh/known_hosts:2
  remove with:
  ssh-keygen -f "/home/me/.ssh/known_hosts" -R "[10.0.0.12]:2222"
Host key for [10.0.0.12]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""
UNKNOWN_KEY = ("No ED25519 host key is known for [10.0.0.12]:2222 and you have requested strict checking.\n"
               "Host key verification failed.\n")


@pytest.mark.parametrize(("stderr", "kind", "says", "fix"), [
    ("root@10.0.0.11: Permission denied (publickey).\n", KeyRefusedError,
     "web1 refused our SSH key (Permission denied (publickey) for root@10.0.0.11)", "authorized_keys"),
    (CHANGED_KEY, HostKeyError, "the SSH host key of web1 differs from the one pinned in known_hosts",
     'ssh-keygen -f "/home/me/.ssh/known_hosts" -R "[10.0.0.12]:2222"'),
    (UNKNOWN_KEY, HostKeyError, "the SSH host key of web1 is not in known_hosts",
     "ssh-keyscan -p 2222 10.0.0.12 >> ~/.ssh/known_hosts"),
    ("No ED25519 host key is known for web9.example.com and you have requested strict checking.\n",
     HostKeyError, "not in known_hosts", "ssh-keyscan web9.example.com"),
    ("ssh: Could not resolve hostname web1: Name or service not known\n", HostUnreachableError,
     "cannot resolve the host name of web1 (Name or service not known)",
     "HostName"),
    ("Permission denied (publickey,password).\n", KeyRefusedError, "(Permission denied (publickey,password))",
     "IdentityFile"),
    ("ssh: connect to host 10.0.0.11 port 22: Connection refused\n", HostUnreachableError,
     "cannot reach web1 over SSH: connection refused (tried 10.0.0.11 port 22)", "sshd listens"),
    ("ssh: connect to host 10.0.0.11 port 22: No route to host\n", HostUnreachableError, "no route to host", "up"),
    ("ssh: connect to host 10.0.0.11 port 22: Network is unreachable\n", HostUnreachableError,
     "network is unreachable", "up"),
    ("ssh: connect to host 10.0.0.11 port 22: Connection timed out\n", HostUnreachableError,
     "cannot reach web1 over SSH: connection timed out", "up"),
    ("Connection timed out during banner exchange\n", HostUnreachableError, "no SSH greeting", "up"),
    ("Timeout, server web1 not responding.\n", HostUnreachableError, "the host stopped answering", "up"),
    ("some output\nConnection to 10.0.0.11 closed by remote host.\n", HostUnreachableError,
     "the connection was lost", "up"),
    ("kex_exchange_identification: read: Connection reset by peer\n", HostUnreachableError,
     "closed the connection before login", "up"),
])
def test_ssh_failures_are_one_line_errors_naming_the_host_and_the_fix(
        stderr: str, kind: type[Exception], says: str, fix: str) -> None:
    error = classify_ssh_failure("web1", stderr)
    assert isinstance(error, kind)
    assert says in error.message and fix in (error.hint or "")
    assert error.host == "web1" and error.exit_code == ExitCode.SSH
    [line] = format_error(error)
    assert line.startswith("error: ") and "web1" in line and "(fix: " in line


def test_words_that_are_not_sshs_are_not_classified() -> None:
    assert classify_ssh_failure("web1", "") is None
    assert classify_ssh_failure("web1", "cat: /srv/x: Permission denied\n") is None
    error = unrecognised_ssh_failure("web1", "Bad owner or permissions on /home/me/.ssh/config\n")
    assert error.message == "ssh to web1 failed: Bad owner or permissions on /home/me/.ssh/config"
    assert error.exit_code == ExitCode.SSH


def test_the_control_sockets_dir_is_private_and_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long_tmp = tmp_path / ("t" * 80)
    long_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    with SshTransport() as transport:
        assert transport.control_dir.stat().st_mode & 0o777 == 0o700
        assert len(f"{transport.control_dir}/{'0' * 40}") < 100  # a unix socket path's limit is 104-108 bytes
    assert not transport.control_dir.exists()


# Killed by SIGTERM the first time it runs (the flag file says so), before it says anything, or after.
KILLED_ONCE = """
if [ -e "$1" ]; then echo ran; exit 0; fi
touch "$1"
if [ "$2" = after ]; then echo started; fi
kill -TERM $$
"""


def test_a_command_a_stop_signal_killed_before_it_said_anything_is_run_again(tmp_path: Path) -> None:
    """A Ctrl-C or SIGTERM sent to the controller's process group can reach an ssh in the instant before it is
    in its own session: it never ran, and must not count as the host's answer (a fleet's rollout took it for
    a host's failure so)."""
    with SshTransport() as transport:
        done = transport._execute("web1", ["sh", "-c", KILLED_ONCE, "sh", str(tmp_path / "flag")], None, 10, "x")
    assert (done.returncode, done.stdout) == (0, b"ran\n")


def test_a_command_killed_after_it_said_something_is_not_run_again(tmp_path: Path) -> None:
    with SshTransport() as transport:
        done = transport._execute("web1", ["sh", "-c", KILLED_ONCE, "sh", str(tmp_path / "flag"), "after"], None, 10,
                                  "x")
    assert (done.returncode, done.stdout) == (-signal.SIGTERM, b"started\n")
