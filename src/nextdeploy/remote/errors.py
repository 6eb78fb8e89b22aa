"""SSH failures as one-line errors, and the pure function that tells them from ssh's stderr.

``ssh`` exits 255 for its own failures and prints one of a few well-known lines (OpenSSH's wording has
been stable for a decade); any other exit code is the remote command's. All of these share one exit code
(``ExitCode.SSH``): the fix is always on the SSH side, and the message names the host and says which fix.

    SshError                 ssh failed and said something we do not recognise (its last line is shown)
    ├── HostUnreachableError  connection refused, no route, timed out, DNS failure, or the connection was lost
    ├── KeyRefusedError       the host refused every key we offered (Permission denied (publickey))
    ├── HostKeyError          the host's key is not in known_hosts, or differs from the one pinned there
    └── RemoteTimeoutError    a remote command did not finish in its time
"""

from __future__ import annotations

import re

from nextdeploy.core.errors import ExitCode, NextdeployError


class SshError(NextdeployError):
    exit_code = ExitCode.SSH

    def __init__(self, host: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class HostUnreachableError(SshError):
    pass


class KeyRefusedError(SshError):
    pass


class HostKeyError(SshError):
    pass


class RemoteTimeoutError(SshError):
    pass


# (pattern in ssh's stderr, what it means), the first match wins.
_UNREACHABLE = (
    (r"Connection refused", "connection refused"),
    (r"No route to host", "no route to host"),
    (r"Network is unreachable", "network is unreachable"),
    (r"Connection timed out during banner exchange", "no SSH greeting: connection timed out"),
    (r"Connection timed out|Operation timed out", "connection timed out"),
    (r"Timeout, server .* not responding", "the connection was lost: the host stopped answering"),
    (r"Connection to .* closed by remote host|client_loop: send disconnect|Broken pipe",
     "the connection was lost"),
    (r"kex_exchange_identification|Connection (closed|reset) by", "the host closed the connection before login"),
)


def classify_ssh_failure(host: str, stderr: str) -> SshError | None:
    """The error ssh's own ``stderr`` reports about ``host``, or None when it names no SSH failure
    (then an exit code of 255 may be the remote command's own)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = "\n".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or re.search(r"Host key for .* has changed", text):
        remove = re.search(r'ssh-keygen -f ".*" -R ".*"', text)
        return HostKeyError(
            host, f"the SSH host key of {host} differs from the one pinned in known_hosts",
            hint=f"if {host} was reinstalled, check its new key's fingerprint, remove the old line "
                 f"(`{remove[0] if remove else 'ssh-keygen -R <its address>'}`) and pin the new one; if not, "
                 "someone may be intercepting the connection",
        )
    if re.search(r"No \S+ host key is known for", text) or "Host key verification failed" in text:
        known_for = re.search(r"host key is known for (\[(\S+)\]:(\d+)|\S+) ", text)
        if known_for and known_for[2]:
            keyscan = f"ssh-keyscan -p {known_for[3]} {known_for[2]}"
        else:
            keyscan = f"ssh-keyscan {known_for[1] if known_for else '<its address>'}"
        return HostKeyError(
            host, f"the SSH host key of {host} is not in known_hosts (nextdeploy never accepts an unknown key)",
            hint=f"check the key's fingerprint on {host}, then pin it: `{keyscan} >> ~/.ssh/known_hosts` "
                 "(or connect once with ssh and answer yes)",
        )
    if "Permission denied (" in text:
        denied = re.search(r"(?:(\S+): )?(Permission denied \(\S+\))", text)
        assert denied is not None
        login = f" for {denied[1]}" if denied[1] else ""
        return KeyRefusedError(
            host, f"{host} refused our SSH key ({denied[2]}{login})",
            hint=f"add your public key to ~/.ssh/authorized_keys of the login user on {host}, or name the "
                 "right key (IdentityFile in your ssh config, or load it into your ssh agent); nextdeploy "
                 "never types a password",
        )
    if "Could not resolve hostname" in text:
        return HostUnreachableError(
            host, f"cannot resolve the host name of {host} ({_after_last_colon(lines, 'Could not resolve hostname')})",
            hint=f"check the name, or give {host} a HostName in your ssh config ([ssh] config)",
        )
    for pattern, reason in _UNREACHABLE:
        if re.search(pattern, text):
            tried = re.search(r"connect to host (\S+) port (\d+)", text)
            where = f" (tried {tried[1]} port {tried[2]})" if tried and tried[1] != host else ""
            return HostUnreachableError(
                host, f"cannot reach {host} over SSH: {reason}{where}",
                hint=f"check that {host} is up and its sshd listens at the address and port your ssh config "
                     f"gives (`ssh {host} true` shows the same); a firewall or ProxyJump may be in the way",
            )
    return None


def unrecognised_ssh_failure(host: str, stderr: str) -> SshError:
    """ssh failed (exit 255, no connection to the host) with words we do not know: show its last line."""
    return SshError(host, f"ssh to {host} failed: {last_line(stderr)}",
                    hint=f"run `ssh {host} true` to see the whole story, and fix what it says")


def _after_last_colon(lines: list[str], needle: str) -> str:
    """What the line with ``needle`` says last: ``ssh: Could not resolve hostname x: Name or service not known``
    gives the reason, ``Name or service not known``."""
    line = next(line for line in lines if needle in line)
    return line.rsplit(": ", 1)[-1]


def last_line(text: str) -> str:
    """The last non-blank line of a program's output: usually what it says went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
