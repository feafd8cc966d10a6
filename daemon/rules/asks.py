"""Reading ask and ask_json triggers from their YAML nodes (a part of `daemon.rules.files`). Plain
values are read without YAML 1.1's implicit types: `enum: [yes, no]` stays the words.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from daemon.rules.answers import AskJson, parse_ask_json
from daemon.rules.model import Ask

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
MAX_DEPTH = 3  # fields: {name: {enum: [values]}}


def plain(node: yaml.Node, depth: int = 0) -> Any:
    """A node's value: mappings and lists of numbers, booleans and text, at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply: a field is {type: ..., minimum: ...} or {enum: [...]}")
    if isinstance(node, yaml.MappingNode):
        return {str(k.value): plain(v, depth + 1) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [plain(v, depth + 1) for v in node.value]
    text = str(node.value)
    if node.style is None and NUMBER.fullmatch(text):
        value = float(text)
        return int(value) if value.is_integer() and re.fullmatch(r"[-+]?\d+", text) else value
    if node.style is None and text in ("true", "false"):
        return text == "true"
    return text


class AskReader:
    """`_RuleReader`'s ask and ask_json: options, keys, problem(), _text(), _texts() and _value() (a
    scalar's YAML value) come from the reader."""

    def _ask(self) -> Ask | None:
        try:
            question = self._text(self.options["ask"], "ask")
        except ValueError as exc:
            self.problem(self.keys["ask"], str(exc))
            return None
        choices: tuple[str, ...] = ("yes", "no")
        if "choices" in self.options:
            try:
                choices = tuple(c.strip() for c in self._texts(self.options["choices"], "a choice"))
            except ValueError as exc:
                self.problem(self.keys["choices"], f"choices: {exc}")
                return None
            if len(choices) < 2 or len(set(choices)) != len(choices):
                self.problem(self.keys["choices"], "choices: give at least two different choices, e.g. [yes, no]")
                return None
        when = choices[0]
        if "when" in self.options:
            try:
                when = self._text(self.options["when"], "when").strip()
            except ValueError as exc:
                self.problem(self.keys["when"], str(exc))
                return None
            if when not in choices:
                self.problem(self.keys["when"], f"when {when!r} is not among choices ({', '.join(choices)})")
                return None
        threshold = 0.5
        if "threshold" in self.options:
            value = self._value(self.options["threshold"])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                self.problem(self.keys["threshold"], f"threshold must be a probability from 0 to 1 (got {value!r})")
                return None
            threshold = float(value)
        return Ask(question.strip(), choices, when, threshold)

    def _ask_json(self) -> AskJson | None:
        try:
            question = self._text(self.options["ask_json"], "ask_json").strip()
        except ValueError as exc:
            self.problem(self.keys["ask_json"], str(exc))
            return None
        try:
            return parse_ask_json(question, self._plain("fields"), self._plain("when"))
        except ValueError as exc:
            key = "when" if str(exc).startswith("when") else "fields"
            self.problem(self.keys.get(key, self.keys["ask_json"]), str(exc))
            return None

    def _plain(self, key: str) -> Any:
        try:
            return plain(self.options[key]) if key in self.options else None
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
