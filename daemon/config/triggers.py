"""External triggers (`triggers:` under a camera): MQTT messages that make the camera's next
window analysed whatever the gate says.
"""

from __future__ import annotations

from typing import Union

from pydantic import Field, field_validator, model_validator

from daemon.config.base import Section

Scalar = Union[str, int, float, bool]


class TriggerSettings(Section):
    """One MQTT trigger: a topic, and what its payload must say."""


    topic: str = Field(min_length=1, description="MQTT topic (filter; + and # allowed), e.g. frigate/events.")
    match: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="The payload is JSON and each dotted path has this value (a list: any of them; a path whose "
        "value is a list, e.g. after.current_zones, matches when it contains it), e.g. "
        "{after.camera: front, after.label: person}.",
    )
    payload: str | None = Field(
        None, description="The payload is exactly this text (e.g. ON from a Home Assistant motion sensor); "
        "instead of match.")
    name: str | None = Field(
        None, min_length=1, max_length=80,
        description="What the window's reason says (default: the topic and the match), e.g. frigate person.")

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        levels = topic.split("/")
        if any(("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+")
               for i, level in enumerate(levels)):
            raise ValueError("+ must be a whole topic level and # the last one (e.g. frigate/+/motion, zigbee/#)")
        return topic

    @field_validator("match")
    @classmethod
    def _paths(cls, match: dict) -> dict:
        for path in match:
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"path {path!r} must be keys joined by dots, e.g. after.label")
        return match

    @model_validator(mode="after")
    def _one_test(self) -> "TriggerSettings":
        if self.match and self.payload is not None:
            raise ValueError("give match (fields of a JSON payload) or payload (the exact text), not both")
        return self

    @property
    def label(self) -> str:
        """The reason recorded for a window this trigger forced."""
        if self.name:
            return self.name
        if self.payload is not None:
            return f"{self.topic} {self.payload}"
        shown = " ".join(f"{path}={value}" for path, value in self.match.items())
        return f"{self.topic} {shown}".strip()
