"""The Server Actions encryption key: one per app, stored in ``<root>/shared/`` with mode 0600.

Next.js makes a new key per build unless ``NEXT_SERVER_ACTIONS_ENCRYPTION_KEY`` is set, so a form
rendered by release A fails to submit to release B ("Failed to find Server Action"). The same key is
given to every build and every instance. It is never printed, logged, or written into another file:
the PM2 ecosystem file reads it from its file at load time, and the copy Next writes into the build's
server reference manifest is removed from each release (then the release is checked for any other copy).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from nextdeploy.core.config import Config, validate_server_actions_key
from nextdeploy.core.errors import ConfigError
from nextdeploy.core.paths import DeployPaths
from nextdeploy.host.files import write_atomic
from nextdeploy.plans.ops import Op, WriteFile

SERVER_ACTIONS_ENV = "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"
KEY_FILE_NAME = "server-actions.key"


def key_file(paths: DeployPaths) -> Path:
    return paths.shared_dir / KEY_FILE_NAME


def ensure_server_actions_key(config: Config, paths: DeployPaths) -> str:
    """The app's key: the configured one, else the stored one, else a new one stored with mode 0600.

    Also makes the build dirs and the build cache private (0700): Next writes the key into the build's
    server reference manifest, and Turbopack keeps a copy in ``.next/cache`` (kept in ``<root>/cache``)."""
    for directory in (paths.builds_dir, paths.cache_dir):
        if directory.is_dir():
            os.chmod(directory, 0o700)
    path = key_file(paths)
    if config.security.server_actions_key is not None:
        key = config.security.server_actions_key
    elif path.exists():
        key = path.read_text(encoding="utf-8").strip()
        try:
            validate_server_actions_key(key)
        except ValueError as exc:
            raise ConfigError(f"the stored Server Actions key in {path} {exc}",
                              hint=f"delete {path} to generate a new one (open forms will need a reload)") from None
    else:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
    _store(path, key)
    return key


def _store(path: Path, key: str) -> None:
    """Write the key with mode 0600 from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8").strip() == key:
        os.chmod(path, 0o600)
        return
    write_atomic(path, key + "\n", 0o600)  # its temp file is created 0600 (mkstemp)


def secret_files(paths: DeployPaths) -> dict[str, Path]:
    """Env names whose values the ecosystem file reads from files at load time."""
    path = key_file(paths)
    return {SERVER_ACTIONS_ENV: path} if path.exists() else {}


def secret_values(paths: DeployPaths) -> dict[str, str] | None:
    """What the ecosystem file reads from ``secret_files`` (trimmed as it does); None if one is unreadable."""
    try:
        return {name: path.read_text(encoding="utf-8").strip() for name, path in secret_files(paths).items()}
    except (OSError, UnicodeDecodeError):
        return None


def stored_server_actions_key(config: Config, paths: DeployPaths) -> str | None:
    """The key builds get (configured, else stored), without creating one; None before the first deploy."""
    if config.security.server_actions_key is not None:
        return config.security.server_actions_key
    path = key_file(paths)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


# Next writes the build's key into these files (as ``encryptionKey``) for servers started without the env
# var. Releases always get the env var (preflight and PM2), so the copy in the release is removed.
REFERENCE_MANIFESTS = ("server-reference-manifest.json", "server-reference-manifest.js")
_JS_MANIFEST_PREFIX = "self.__RSC_SERVER_MANIFEST="


def scrubbed_manifest(text: str, javascript: bool) -> str | None:
    """``text`` of a server reference manifest without its ``encryptionKey``; None if it has none.

    Raises ValueError when the file is not in the shape Next writes."""
    if javascript:
        stripped = text.strip().rstrip(";")
        if not stripped.startswith(_JS_MANIFEST_PREFIX):
            raise ValueError("unexpected server-reference-manifest.js")
        inner = json.loads(stripped[len(_JS_MANIFEST_PREFIX):])
        if not isinstance(inner, str):
            raise ValueError("unexpected server-reference-manifest.js")
        scrubbed = scrubbed_manifest(inner, javascript=False)
        return None if scrubbed is None else _JS_MANIFEST_PREFIX + json.dumps(scrubbed)
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("unexpected server-reference-manifest.json")
    if "encryptionKey" not in data:
        return None
    del data["encryptionKey"]
    return json.dumps(data, indent=2)


def scrub_ops(server_dir: Path) -> list[Op]:
    """Rewrite the release's server reference manifests without the key. Reads them; raises ValueError."""
    ops: list[Op] = []
    for name in REFERENCE_MANIFESTS:
        path = server_dir / name
        if not path.is_file():
            continue
        scrubbed = scrubbed_manifest(path.read_text(encoding="utf-8"), javascript=name.endswith(".js"))
        if scrubbed is not None:
            ops.append(WriteFile(path, scrubbed, mode=0o644))
    return ops


def files_containing(directory: Path, secret: str, skip: Iterable[str] = (), scanned: Path | None = None) -> list[str]:
    """Files under ``directory`` (links not followed) whose bytes contain ``secret``, relative to it.

    ``scanned``: an earlier tree that passed this scan (the live release). A file that is a hard link to its
    counterpart there is not read again: a new release's unchanged dependency files are (most of its bytes;
    docs/bench/HISTORY.md), and bytes written before a key existed cannot hold it."""
    needle = secret.encode()
    skipped = set(skip)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [name for name in dirnames if name not in skipped]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode) or (scanned is not None and info.st_nlink > 1
                                               and _same_inode(info, scanned / os.path.relpath(path, directory))):
                continue
            try:
                with open(path, "rb") as handle:
                    if needle in handle.read():
                        found.append(os.path.relpath(path, directory))
            except OSError:
                continue
    return sorted(found)


def _same_inode(info: os.stat_result, other: Path) -> bool:
    try:
        other_info = os.lstat(other)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (other_info.st_dev, other_info.st_ino)


PM2_DUMP_FILES = ("dump.pm2", "dump.pm2.bak")


def protect_pm2_dump(pm2_home: Path) -> None:
    """Make PM2's dump files private (0600) before ``pm2 save`` writes them.

    ``pm2 save`` stores each app's env, Server Actions key included, in ``<PM2_HOME>/dump.pm2`` (and
    the previous one in ``dump.pm2.bak``); PM2 creates them 0644. Its daemon rewrites them in place, so a
    file that exists with 0600 stays 0600. A new one holds an empty process list, valid for resurrect."""
    pm2_home.mkdir(parents=True, exist_ok=True)
    for name in PM2_DUMP_FILES:
        path = pm2_home / name
        if path.is_symlink():
            continue
        if path.exists():
            os.chmod(path, 0o600)
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"[]")
        finally:
            os.close(fd)
