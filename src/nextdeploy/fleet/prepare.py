"""Preparing the hosts before any switches: the fleet's one Server Actions key.

Next.js encrypts Server Actions' closed-over values and ids with ``NEXT_SERVER_ACTIONS_ENCRYPTION_KEY``; a form
rendered by one host and submitted to another fails unless both run with the same key (and the release
was built with it). So a fleet deploy decides the key once, before the build, and every host gets it in
``<root>/shared/server-actions.key`` (mode 0600, where a local deploy keeps it: release/secrets.py):

- the configured key (``[security] server_actions_key``) if there is one; else the key the hosts already
  share; else, when they hold different keys, the first host's (config order) and the others are named;
  else the controller's stored one; else a new one;
- sent to each host on ssh's stdin (``cat >`` a 0600 temp file, then renamed over the key file): never on a
  command line, which the host's process list shows, and never printed or logged;
- then read back as a hash on every host: all equal to the hash of the key, and the file 0600.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nextdeploy.core.config import validate_server_actions_key
from nextdeploy.core.errors import ConfigError, HostPathError
from nextdeploy.fleet.parallel import on_every_host
from nextdeploy.release.secrets import KEY_FILE_NAME
from nextdeploy.remote.errors import last_line
from nextdeploy.remote.ssh import SshTransport

# On a host, $1 the key file: its mode and the sha256 of its trimmed content ("absent" when there is none).
_DIGEST = r"""
[ -f "$1" ] || { echo absent; exit 0; }
python3 - "$1" <<'EOF'
import hashlib, os, stat, sys
path = sys.argv[1]
print(oct(stat.S_IMODE(os.stat(path).st_mode))[2:], hashlib.sha256(open(path, "rb").read().strip()).hexdigest())
EOF
"""
# $1 the shared dir: the key comes on stdin, into a file that is 0600 from its creation.
_INSTALL = r"""
mkdir -p -- "$1" || exit 1
tmp="$1/.server-actions.key.tmp"
(umask 077 && cat > "$tmp") && chmod 600 "$tmp" && mv -f -- "$tmp" "$1/server-actions.key"
"""


def key_digest(key: str) -> str:
    """What a host reports for a key file holding ``key``: sha256 of the trimmed text."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class HostKey:
    """A host's key file as seen from the controller (never the key itself)."""

    host: str
    digest: str | None  # None: no key file
    mode: str | None = None  # octal, e.g. "600"


@dataclass(frozen=True)
class KeyChoice:
    """Where the fleet's key comes from, and which hosts must be given it. Holds no secret: loggable."""

    source: str  # "configured", "hosts" (the key they share, or the first host's), "controller" or "generated"
    digest: str  # key_digest of the key
    from_host: str | None  # the host whose key is reused ("hosts")
    install: tuple[str, ...]  # hosts without it, or with another key, or with a file not 0600
    differing: tuple[str, ...]  # hosts holding another key, replaced (their open forms need a reload)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "digest": self.digest, "from_host": self.from_host,
                "install": list(self.install), "differing": list(self.differing)}


def choose_key(found: Sequence[HostKey], configured: str | None, controller: str | None) -> tuple[str, KeyChoice]:
    """Which key the fleet uses (see the module's doc), without reading a host's key: when the key of a
    host is reused, the caller fetches it (``KeyChoice.from_host``) and passes it as ``configured`` again.

    Returns the key ("" when it must be fetched from ``from_host``) and the choice."""
    held = [host_key for host_key in found if host_key.digest is not None]
    if configured is not None:
        key, source, from_host = configured, "configured", None
        digest = key_digest(configured)
    elif held:
        key, source, from_host, digest = "", "hosts", held[0].host, held[0].digest or ""
    elif controller is not None:
        key, source, from_host = controller, "controller", None
        digest = key_digest(controller)
    else:
        key, source, from_host = new_key(), "generated", None
        digest = key_digest(key)
    install = tuple(h.host for h in found if h.digest != digest or h.mode != "600")
    differing = tuple(h.host for h in found if h.digest is not None and h.digest != digest)
    return key, KeyChoice(source, digest, from_host, install, differing)


# --- doing ------------------------------------------------------------------------------------------


def key_path(root: str) -> str:
    return f"{root.rstrip('/')}/shared/{KEY_FILE_NAME}"


def read_host_keys(transport: SshTransport, roots: Mapping[str, str]) -> list[HostKey]:
    """The digest and mode of every host's key file, in ``roots``' order."""

    def one(host: str) -> HostKey:
        result = transport.run(host, ["sh", "-c", _DIGEST, "sh", key_path(roots[host])], timeout=60)
        said = result.text.split()
        if not result.ok or not said:
            raise HostPathError(f"cannot read {key_path(roots[host])} on {host}: {last_line(result.error_text)}",
                                hint=f"check that the ssh user of {host} can read {roots[host]}/shared")
        if said == ["absent"]:
            return HostKey(host, None)
        return HostKey(host, said[1], said[0])

    return on_every_host(list(roots), one)


def fetch_host_key(transport: SshTransport, host: str, root: str) -> str:
    """The key stored on ``host`` (over ssh's stdout; never shown). Raises ConfigError if it is not a key."""
    result = transport.run(host, ["cat", "--", key_path(root)], timeout=60)
    if not result.ok:
        raise HostPathError(f"cannot read {key_path(root)} on {host}: {last_line(result.error_text)}",
                            hint=f"check that the ssh user of {host} can read it")
    key = result.text.strip()
    try:
        validate_server_actions_key(key)
    except ValueError as exc:
        raise ConfigError(f"the stored Server Actions key in {key_path(root)} on {host} {exc}",
                          hint=f"delete it on {host} to have a new one sent (open forms will need a reload)") from None
    return key


def install_key(transport: SshTransport, host: str, root: str, key: str) -> None:
    """Write ``key`` into the host's key file (0600), sent on stdin."""
    shared = f"{root.rstrip('/')}/shared"
    result = transport.run(host, ["sh", "-c", _INSTALL, "sh", shared], stdin=(key + "\n").encode(), timeout=60)
    if not result.ok:
        raise HostPathError(f"cannot write {shared}/{KEY_FILE_NAME} on {host}: {last_line(result.error_text)}",
                            hint=f"check that the ssh user of {host} can write {shared}")


def prepare_key(transport: SshTransport, roots: Mapping[str, str], configured: str | None = None,
                controller: str | None = None) -> tuple[str, KeyChoice]:
    """Decide the fleet's key, give it to every host that lacks it, and check that every host now holds it
    (by its hash, file 0600). Returns the key (for the build) and the choice (loggable)."""
    key, choice = decide_key(transport, roots, configured, controller)
    give_key(transport, roots, key, choice)
    return key, choice


def decide_key(transport: SshTransport, roots: Mapping[str, str], configured: str | None = None,
               controller: str | None = None, found: Sequence[HostKey] | None = None) -> tuple[str, KeyChoice]:
    """Which key the fleet uses (the key itself, fetched from a host when one of theirs is reused), changing
    nothing on any host: a deploy decides it before its build and gives it once the release is shipped.
    ``found``: every host's key file, when the caller has just read it (``read_host_keys``)."""
    key, choice = choose_key(read_host_keys(transport, roots) if found is None else found, configured, controller)
    if choice.from_host is not None:
        key = fetch_host_key(transport, choice.from_host, roots[choice.from_host])
        if key_digest(key) != choice.digest:
            raise HostPathError(f"the Server Actions key on {choice.from_host} changed while it was read",
                                hint="is another deploy running? run the command again")
    return key, choice


def give_key(transport: SshTransport, roots: Mapping[str, str], key: str, choice: KeyChoice) -> None:
    """Install ``key`` on the hosts ``choice`` names, then check that every host holds it (hash, 0600)."""
    on_every_host(list(choice.install), lambda host: install_key(transport, host, roots[host], key))
    wrong = [h.host for h in read_host_keys(transport, roots) if h.digest != choice.digest or h.mode != "600"]
    if wrong:
        raise HostPathError(f"the Server Actions key on {', '.join(wrong)} differs from the fleet's after it was "
                            "sent", hint=f"check {key_path(roots[wrong[0]])} on {wrong[0]} (a full disk?) and run "
                                         "the command again")
