"""What every configuration section shares: the base model (unknown keys fail),
the pattern of names that become MQTT topics, and a checked time-zone type.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

from daemon.times import zone_info

NAME_RE = r"^[a-z0-9][a-z0-9_-]*$"  # becomes part of MQTT topics and entity ids


def _check_zone(name: str | None) -> str | None:
    if name is not None:
        zone_info(name)
    return name


Timezone = Annotated[str | None, AfterValidator(_check_zone)]  # an IANA zone name, checked at load


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
