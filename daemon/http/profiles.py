"""Client profiles: the prompts of the tools this endpoint serves, recognised by their structure and
rewritten short enough for the model's context.

    match = recognise(turns, n_images, settings)        # Frigate review / object description, LLM Vision, or None
    question = render(match, settings, fits)            # the compact prompt that fits, or None

Frigate 0.17 and LLM Vision 1.7 send prompts written for models with 8k-128k
tokens of context: Frigate's review description is about 3,800 tokens of
instructions, where InternVL3-2B on the AX650N "2048" build has room for
about 40 tokens of text beside 8 frames. A profile keeps what the request says
about *this* event (camera, objects, zones, start and duration, the user's
concerns, the language) and asks for the same reply in a few words; the reply's
shape is enforced by constrained decoding with the profile's schema, so the
prompt need not spell it out.

Recognition looks at structure, never at exact text (which changes with every
release of those tools): which messages carry which parts, the reply keys a
prompt asks for, the sections and bullet lists that hold the facts. What each
profile looks for was read from the clients' source (Frigate v0.17.2
`frigate/genai/__init__.py` and `openai.py`; LLM Vision v1.7.0
`custom_components/llmvision/providers.py`, `OpenAI._prepare_vision_data`).

Templates name facts as {camera}, {objects}, ...; they are filled by
substitution of those names only (never `str.format` on a client's text).
A line whose facts are all empty is left out; when the prompt does not fit,
the first line is kept and each later line only if it still fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from daemon.http.messages import Turn

# Frigate 0.17.2's review reply (`ReviewMetadata` in frigate/data_processing/post/types.py, and the keys its
# prompt asks for: threat levels 0, 1, 2), as a schema; the lengths are ours, sized for notifications.
FRIGATE_REVIEW_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "scene": {"type": "string", "minLength": 1, "maxLength": 400},
        "title": {"type": "string", "minLength": 1, "maxLength": 80},
        "shortSummary": {"type": "string", "minLength": 1, "maxLength": 200},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "potential_threat_level": {"type": "integer", "enum": [0, 1, 2]},
    },
    "required": ["scene", "title", "shortSummary", "confidence", "potential_threat_level"],
    "additionalProperties": False,
}
REVIEW_KEYS = frozenset(FRIGATE_REVIEW_SCHEMA["required"])

TEMPLATES: Mapping[str, str] = {
    # One line per fact group; lines after the first are dropped from the end when room is short.
    # Facts first, most telling first: the 2048 build with InternVL's own system text has room for the first
    # line beside 8 frames; a short model.system (README) makes room for all of them.
    "frigate-review": "Camera {camera}, {frames} frames in order. Objects: {objects}.\n"
                      "Answer in {language}.\n"
                      "Started {start}, lasted {duration} s. Zones: {zones}.\n"
                      "Also report: {concerns}.\n"
                      "Say what they do; threat 0 normal, 1 suspicious, 2 danger.",
    "frigate-object": "What is the {label} doing, and what will it likely do next? Two sentences.",
    "llmvision": "{message}\n"
                 "Images: {labels}.\n"
                 "Be brief and factual; focus on people, pets and moving things.",
}
ORDER = ("frigate-review", "llmvision", "frigate-object")  # most specific first


@dataclass(frozen=True)
class Match:
    """A recognised request: which profile, the facts it carries, the reply schema to enforce (or None)."""

    profile: str
    facts: Mapping[str, str] = field(default_factory=dict)
    schema: Mapping[str, Any] | None = None


def recognise(turns: tuple[Turn, ...], n_images: int, enabled: Callable[[str], bool] = lambda name: True) -> Match | None:
    """The first enabled profile whose structure the request has."""
    readers = {"frigate-review": frigate_review, "llmvision": llmvision, "frigate-object": frigate_object}
    for name in ORDER:
        if enabled(name):
            match = readers[name](turns, n_images)
            if match is not None:
                return match
    return None


def render(match: Match, template: str, fits: Callable[[str], bool]) -> str | None:
    """The template filled with the match's facts: its first line, then each further line that still fits,
    in order; None when not even the first line fits."""
    lines = [line for line in (fill(t, match.facts) for t in template.split("\n")) if line is not None]
    if not lines or not fits(lines[0]):
        return None
    kept = lines[:1]
    for line in lines[1:]:
        if fits("\n".join(kept + [line])):
            kept.append(line)
    return "\n".join(kept)


_FIELD = re.compile(r"\{([a-z_]+)\}")


def fill(line: str, facts: Mapping[str, str]) -> str | None:
    """`line` with each {name} replaced by its fact; None when it names facts and all of them are empty."""
    names = _FIELD.findall(line)
    if names and not any(facts.get(n) for n in names):
        return None
    return _FIELD.sub(lambda m: facts.get(m.group(1)) or "none", line)


# --------------------------------------------------------------------------- Frigate


def frigate_review(turns: tuple[Turn, ...], n_images: int) -> Match | None:
    """Frigate's review description: one user message, images then one long text that asks for a flat JSON
    object with the review keys (named in backticks), in sections that list the event's facts."""
    if len(turns) != 1 or turns[0].role != "user" or len(turns[0].texts) != 1:
        return None
    text = turns[0].texts[0]
    if not REVIEW_KEYS <= set(re.findall(r"`(\w+)`", text)):
        return None
    facts = {
        "camera": _search(r"perspective of the (.+?) (?:security )?camera", text)
                  or _search(r"\b(?:from|on) (?:the )?(\S+) camera", text),
        "frames": str(n_images),
        "start": _time_of_day(_search(r"started at ([^\n]+?) and lasted", text)),
        "duration": _search(r"lasted ([\d.]+) ?s", text),
        "zones": _none_is_empty(_search(r"^\s*- Zones[^:\n]*:\s*([^\n]+)$", text)),
        "objects": ", ".join(_bullets(_section(text, "object"))),
        "concerns": ", ".join(_indented_bullets(text, "other_concerns")),
        "language": _search(r"(?:answer|respond|reply)\b[^\n.]* in ([A-Z][\w -]{1,30}?)\s*\.?\s*$", text),
    }
    return Match("frigate-review", _trim(facts), FRIGATE_REVIEW_SCHEMA)


def frigate_object(turns: tuple[Turn, ...], n_images: int) -> Match | None:
    """Frigate's object description: one user message, its images first and one text about one tracked
    object's label (`{label}` in Frigate's prompt template, so the label comes back several times)."""
    if len(turns) != 1 or turns[0].role != "user" or len(turns[0].texts) != 1 or not turns[0].images_first:
        return None
    text = turns[0].texts[0]
    label = _search(r"images? (?:containing|of|showing) (?:the |a |an )?([a-z][\w ]{0,30}?)[.,]", text)
    if not label or len(re.findall(rf"\b{re.escape(label)}\b", text)) < 2:
        return None
    return Match("frigate-object", {"label": label})


# --------------------------------------------------------------------------- LLM Vision


def llmvision(turns: tuple[Turn, ...], n_images: int) -> Match | None:
    """LLM Vision's image analyzer with the "OpenAI compatible" provider: a system message, then (memory
    images in their own user message, maybe) a user message where every image follows a short label text
    ("Image 1:" or a camera's name with a colon) and one last text, the user's message."""
    if len(turns) < 2 or turns[0].role != "system" or turns[-1].role != "user" or not n_images:
        return None
    last = turns[-1]
    labels, message = last.texts[:-1], last.texts[-1] if last.texts else ""
    if not message or len(labels) != last.images or not all(_is_label(t) for t in labels):
        return None
    names = [t.strip().rstrip(":").strip() for t in labels]
    named = [n for n in names if not re.fullmatch(r"Image \d+", n)]
    return Match("llmvision", {"message": message.strip(), "labels": ", ".join(dict.fromkeys(named))})


def _is_label(text: str) -> bool:
    return text.rstrip().endswith(":") and len(text) <= 80 and "\n" not in text.strip()


# --------------------------------------------------------------------------- reading facts


def _search(pattern: str, text: str) -> str:
    m = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
    return m.group(1).strip() if m else ""


def _time_of_day(value: str) -> str:
    """"22:14" of "2026-12-05 22:14:03" (or of "Saturday, 10:14 PM"): the hour matters to a threat, the date
    and seconds cost a dozen tokens (digits are one token each)."""
    m = re.search(r"\b(\d{1,2}:\d{2})(?::\d{2}(?:\.\d+)?)?(\s*[AaPp][Mm])?", value)
    return (m.group(1) + (m.group(2) or "")) if m else value


def _none_is_empty(value: str) -> str:
    return "" if value.strip().lower() in ("none", "n/a", "-") else value


def _section(text: str, heading_word: str) -> str:
    """The body of the last markdown section whose heading contains `heading_word`."""
    parts = re.split(r"^#{1,4} +(.+)$", text, flags=re.MULTILINE)
    bodies = [parts[i + 1] for i in range(1, len(parts) - 1, 2) if heading_word in parts[i].lower()]
    return bodies[-1] if bodies else ""


def _bullets(body: str) -> list[str]:
    items = [m.strip() for m in re.findall(r"^- (?!\()(.+)$", body, flags=re.MULTILINE)]
    return [i for i in items if len(i) <= 60]  # facts, not instructions


def _indented_bullets(text: str, after: str) -> list[str]:
    """The indented bullets right after the line that names `after` (Frigate lists the user's concerns so)."""
    m = re.search(rf"^.*{re.escape(after)}.*\n((?:[ \t]+- .+\n?)+)", text, flags=re.MULTILINE)
    return [b.strip()[2:].strip() for b in m.group(1).splitlines()] if m else []


def _trim(facts: Mapping[str, str], most: int = 200) -> dict[str, str]:
    """Facts shortened to `most` characters each: a fact is a few words; more is not a fact."""
    return {k: (v if len(v) <= most else v[:most].rsplit(" ", 1)[0]) for k, v in facts.items()}
