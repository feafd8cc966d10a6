"""JSON-answer rules: a question whose answer is a small JSON object, and a condition on its values.

    - id: crowd_at_door
      ask_json: How many people are at the door?
      fields: {people: {type: integer, minimum: 0, maximum: 20}}   # each a small JSON schema
      when: {people: {min: 2}}                                     # every condition must hold

Constrained decoding (daemon.engine.constrain) makes the answer always parse; one that somehow
does not counts as not triggering. Pure: no I/O, no eval.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
MAX_FIELDS = 8
MAX_ENUM = 32
FIELD_TYPES = ("string", "integer", "number", "boolean")
SCHEMA_KEYS = ("type", "enum", "minimum", "maximum", "minLength", "maxLength", "description")
MAX_TOKENS = 96  # a few fields of numbers, words and short strings


@dataclass(frozen=True)
class Condition:
    """One field's condition: any of `values`, and/or within [min, max]."""

    key: str
    values: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None

    def holds(self, value: Any) -> bool:
        if self.values and value not in self.values:
            return False
        if self.min is not None or self.max is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        return True


@dataclass(frozen=True)
class AskJson:
    question: str
    schema: str  # JSON text of the answer's object schema (a str: rules are frozen and hashable)
    when: tuple[Condition, ...]
    max_tokens: int = MAX_TOKENS

    def holds(self, text: str) -> bool:
        """Whether the answer's fields meet every condition (an answer that does not parse: no)."""
        try:
            value = json.loads(text)
        except ValueError:
            return False
        return isinstance(value, dict) and all(c.holds(value.get(c.key)) for c in self.when)


def parse_ask_json(question: str, fields: Any, when: Any) -> AskJson:
    """An AskJson from a rule's ask_json, fields and when (plain values); ValueError naming the problem."""
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError("fields: give the answer's fields, e.g. fields: {people: {type: integer, minimum: 0}}")
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"fields: at most {MAX_FIELDS} fields (a short answer is a reliable one)")
    properties = {name: field_schema(name, spec) for name, spec in fields.items()}
    schema = {"type": "object", "properties": properties, "required": list(properties),
              "additionalProperties": False}
    if not isinstance(when, Mapping) or not when:
        raise ValueError("when: give the condition on the answer, e.g. when: {people: {min: 2}}")
    return AskJson(question, json.dumps(schema), tuple(condition(k, v, properties) for k, v in when.items()))


def field_schema(name: Any, spec: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
        raise ValueError(f"fields: {name!r} is not a field name (letters, digits and _, starting with a letter)")
    if not isinstance(spec, Mapping):
        raise ValueError(f"fields.{name}: give a type or an enum, e.g. {{type: integer, minimum: 0}}")
    unknown = sorted(set(spec) - set(SCHEMA_KEYS))
    if unknown:
        raise ValueError(f"fields.{name}: unknown key {unknown[0]!r}; a field takes {', '.join(SCHEMA_KEYS)}")
    if "enum" in spec:
        values = spec["enum"]
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_ENUM or len(set(map(repr, values))) != len(values):
            raise ValueError(f"fields.{name}.enum: give 1 to {MAX_ENUM} different values")
    elif spec.get("type") not in FIELD_TYPES:
        raise ValueError(f"fields.{name}: type must be one of {', '.join(FIELD_TYPES)} (or give an enum)")
    out = dict(spec)
    if out.get("type") == "string" and "maxLength" not in out:
        out["maxLength"] = 80
    return out


def condition(key: Any, spec: Any, properties: Mapping[str, Any]) -> Condition:
    if key not in properties:
        raise ValueError(f"when: {key!r} is not one of the fields ({', '.join(properties)})")
    if isinstance(spec, list):
        return Condition(key, values=tuple(spec))
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"min", "max"})
        bounds = {k: spec.get(k) for k in ("min", "max")}
        if unknown or not any(v is not None for v in bounds.values()) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in bounds.values()):
            raise ValueError(f"when.{key}: give min and/or max numbers, e.g. {{min: 2}}, or a list of values")
        return Condition(key, min=bounds["min"], max=bounds["max"])
    return Condition(key, values=(spec,))
