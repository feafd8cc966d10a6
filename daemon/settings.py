"""What every configuration section shares: the base model (unknown keys fail),
the pattern of names that become MQTT topics, a checked time-zone type, and
secrets read from the environment, a file or a systemd credential.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

from daemon.errors import ConfigError
from daemon.times import zone_info

NAME_RE = r"^[a-z0-9][a-z0-9_-]*$"  # becomes part of MQTT topics and entity ids


def _check_zone(name: str | None) -> str | None:
    if name is not None:
        zone_info(name)
    return name


Timezone = Annotated[str | None, AfterValidator(_check_zone)]  # an IANA zone name, checked at load


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def read_secret(key: str, *, env: str | None = None, file: Path | None = None,
                credential: str | None = None) -> str | None:
    """A secret from an environment variable, a file or a systemd credential (whichever is given),
    or None when none is. ConfigError naming `key` and the remedy when it cannot be read."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{key}_env: environment variable {env} is not set. Set it in the service "
                              "environment (EnvironmentFile=) or use a *_credential (systemd LoadCredential=).")
        return value
    if file is not None:
        return _read_file(Path(file), f"{key}_file")
    if credential is not None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(f"{key}_credential is {credential!r} but $CREDENTIALS_DIRECTORY is not set. Run under "
                              f"systemd with LoadCredential={credential}:/path/to/file, or use {key.rsplit('.', 1)[-1]}"
                              "_file outside systemd.")
        return _read_file(Path(directory) / credential, f"{key}_credential")
    return None


def _read_file(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.__class__.__name__}: "
                          f"{getattr(exc, 'strerror', None) or exc}). Check the path and that the service user "
                          "may read it.") from None
