"""Alert message templates: `{camera}`, `{rule}`, `{text}`, `{probability}` and literal text."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

TEMPLATE_FIELDS = ("camera", "rule", "text", "probability")


@dataclass(frozen=True)
class Template:
    """Parsed pieces, rendered by concatenation: str.format never sees user text."""

    source: str
    pieces: tuple[tuple[str, str | None], ...]  # (literal, field or None)

    @property
    def fields(self) -> set[str]:
        return {f for _, f in self.pieces if f is not None}

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(literal + (values[f] if f is not None else "") for literal, f in self.pieces)


def parse_template(text: str) -> Template:
    """ValueError naming what is not allowed."""
    allowed = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{exc} in {text!r} (write {{{{ and }}}} for literal braces)") from None
    pieces = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in TEMPLATE_FIELDS or spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{shown} is not allowed; use only {allowed}"
                             " (no attributes, indexes, conversions or formats)")
        pieces.append((literal, name))
    return Template(text, tuple(pieces))
