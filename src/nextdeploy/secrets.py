"""The Server Actions encryption key: one per app, stored in ``<root>/shared/`` with mode 0600.

Next.js makes a new key per build unless ``NEXT_SERVER_ACTIONS_ENCRYPTION_KEY`` is set, so a form
rendered by release A fails to submit to release B ("Failed to find Server Action"). The same key is
given to every build and every instance. It is never printed, logged, or written into another file:
the PM2 ecosystem file reads it from its file at load time.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from nextdeploy.config import Config, validate_server_actions_key
from nextdeploy.errors import ConfigError
from nextdeploy.paths import DeployPaths

SERVER_ACTIONS_ENV = "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY"
KEY_FILE_NAME = "server-actions.key"


def key_file(paths: DeployPaths) -> Path:
    return paths.shared_dir / KEY_FILE_NAME


def ensure_server_actions_key(config: Config, paths: DeployPaths) -> str:
    """The app's key: the configured one, else the stored one, else a new one stored with mode 0600."""
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
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def secret_files(paths: DeployPaths) -> dict[str, Path]:
    """Env names whose values the ecosystem file reads from files at load time."""
    path = key_file(paths)
    return {SERVER_ACTIONS_ENV: path} if path.exists() else {}
