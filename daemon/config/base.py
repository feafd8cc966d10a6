"""What every configuration section shares: the base model (unknown keys fail, values frozen),
the one name type (names become MQTT topic levels and entity ids) and a checked time-zone type.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from daemon.times import zone_info

# Every name the user gives (cameras, summary jobs, rules, zones) becomes an MQTT topic level and part of a
# Home Assistant entity id. Always `fullmatch`: with `match` and `$`, "door\n" would pass (`$` also matches
# before a final newline).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NAME_RULE = "1-64 lower-case letters, digits, '_' or '-', starting with a letter or digit"


def check_name(name: str, *, kind: str = "name") -> str:
    """`name` if it is one (`NAME_RE`), else ValueError naming the `kind` ("camera name", "rule", ...)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = name[:80] if isinstance(name, str) else name
        raise ValueError(f"{kind} {shown!r} must be {NAME_RULE} (it becomes an MQTT topic level and a Home "
                         "Assistant entity id)")
    return name


Name = Annotated[str, AfterValidator(check_name)]  # a camera or summary job name, checked whole


def _check_zone(name: str | None) -> str | None:
    if name is not None:
        zone_info(name)
    return name


Timezone = Annotated[str | None, AfterValidator(_check_zone)]  # an IANA zone name, checked at load


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
