"""The `events:` section: one record per activity, from its first changed window to its end."""

from __future__ import annotations

from pydantic import Field, model_validator

from daemon.config.base import Section

DEFAULT_STORY_PROMPT = "What happened in this video, from start to end?"


class EventSettings(Section):
    """Defaults suit a home camera: a visit to the door is one event, a second visit a minute later another."""

    enabled: bool = Field(True, description="Group changed windows into events (MQTT <base>/<camera>/event, "
                          "a story at each event's end, the `events` table).")
    end_after: float = Field(30.0, gt=0, description="Seconds without a changed window after which an event ends.")
    max_length: float = Field(600.0, gt=0, description="Seconds after which a long event ends anyway (and the "
                              "next changed window opens a new one).")
    update_every: float = Field(30.0, ge=0, description="Fewest seconds between two `update` messages of one "
                                "event (rule alerts and descriptions arriving faster are folded into the next "
                                "update or the `end`); 0 = one update per description or alert.")
    prompt: str = Field(DEFAULT_STORY_PROMPT, min_length=1, description="The question asked of 8 frames spread "
                        "across the whole event when it ends (the story). Keep it short: the 8-frame prefix leaves "
                        "about 20-45 tokens for a question in the 2048 build.")
    max_new_tokens: int = Field(96, ge=1, description="Longest story in tokens (86.66 ms of NPU time each on "
                                "the AX650N).")
    keep_frames: int = Field(24, ge=8, le=256, description="Frames an open event keeps for its story (a "
                             "reservoir of the model's 448 x 448 inputs, about 0.6 MB each): bounded whatever "
                             "the event's length; 8 spread across the event are told at its end.")
    description_every: float = Field(0.0, ge=0, description="Per-window description sensor: publish at most "
                                     "every this many seconds per camera (0 = every analysed window).")
    description_changed_only: bool = Field(False, description="Per-window description sensor: publish only "
                                           "when the text differs from the last one published.")

    @model_validator(mode="after")
    def _lengths(self) -> EventSettings:
        if self.max_length <= self.end_after:
            raise ValueError(f"max_length ({self.max_length:g} s) must be longer than end_after "
                             f"({self.end_after:g} s)")
        return self
