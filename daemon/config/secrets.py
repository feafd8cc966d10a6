"""Secrets read from an environment variable, a file or a systemd credential."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.errors import ConfigError


def read_secret(key: str, *, env: str | None = None, file: Path | None = None,
                credential: str | None = None, what: str = "the secret") -> str | None:
    """A secret from an environment variable, a file or a systemd credential (whichever is given),
    or None when none is. ConfigError naming `key` and the remedy when it cannot be read."""
    short = key.rsplit(".", 1)[-1]
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{key}_env: environment variable {env} is not set. Set it in the service "
                              f"environment (EnvironmentFile=) or use {short}_credential.")
        return value
    if file is not None:
        return _read_file(Path(file), f"{key}_file", what)
    if credential is not None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(f"{key}_credential is {credential!r} but $CREDENTIALS_DIRECTORY is not set. Run under "
                              f"systemd with LoadCredential={credential}:/path/to/file, or use {short}_file outside "
                              "systemd.")
        return _read_file(Path(directory) / credential, f"{key}_credential", what)
    return None


def _read_file(path: Path, key: str, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {what} from {path} ({exc.__class__.__name__}: "
                          f"{getattr(exc, 'strerror', None) or exc}). Check the path and that the service user "
                          "may read it.") from None
