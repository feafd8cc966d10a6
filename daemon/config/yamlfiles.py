"""Bounded YAML composition for the configuration and rule files: alias bombs and absurd nesting
are refused while composing, before anything expands."""

from __future__ import annotations

import yaml

MAX_YAML_VALUES = 100_000  # values a file may hold once every alias is expanded (a big config has a few thousand)
MAX_YAML_DEPTH = 50  # levels values may nest (a config needs 5)


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML file past MAX_YAML_VALUES or MAX_YAML_DEPTH: refused while composing, before anything expands."""


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer keeps count of what the document holds with every alias
    expanded, and how deep it nests, so that a "billion laughs" file (745 bytes, 10^9 values
    through nested aliases) is refused after reading its few hundred bytes, in milliseconds,
    instead of exhausting memory in whatever walks it later."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.values = 0  # of the document, aliases expanded
        self.depth = 0  # of the node being composed
        self.open_anchors: set[str] = set()  # anchors of the nodes being composed
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) of a finished node

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                raise self._limit(f"alias *{event.anchor} refers to the value it is part of", event)
            node = super().compose_node(parent, index)  # the anchored node itself, not a copy
            values, depth = self._measure(node)
            self._add(values, self.depth + depth, event, f" (at alias *{event.anchor})")
            return node
        self._add(1, self.depth + 1, event, "")
        anchor = getattr(event, "anchor", None)
        self.depth += 1
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.discard(anchor)

    def _add(self, values: int, depth: int, event: yaml.Event, where: str) -> None:
        self.values += values
        if self.values > MAX_YAML_VALUES:
            raise self._limit(f"the file holds more than {MAX_YAML_VALUES:,} values once its aliases are expanded"
                              f"{where}; vlmwatch refuses such alias bombs: write the values out, or alias less", event)
        if depth > MAX_YAML_DEPTH:
            raise self._limit(f"values nest more than {MAX_YAML_DEPTH} levels deep{where}", event)

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """(values, depth) of a finished node, aliases expanded; memoised, so shared nodes cost once."""
        known = self.measured.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.SequenceNode):
            children = [self._measure(child) for child in node.value]
        elif isinstance(node, yaml.MappingNode):
            children = [self._measure(child) for pair in node.value for child in pair]
        else:
            children = []
        result = (1 + sum(v for v, _ in children), 1 + max((d for _, d in children), default=0))
        self.measured[id(node)] = result
        return result

    @staticmethod
    def _limit(problem: str, event: yaml.Event) -> YamlLimitError:
        return YamlLimitError(problem=problem, problem_mark=event.start_mark)


def compose_yaml(text: str) -> yaml.Node | None:
    """The YAML document's node tree (None if empty), bounded: YamlLimitError (a yaml.MarkedYAMLError
    with the line in `problem_mark`) for alias bombs and absurd nesting; other yaml.YAMLErrors as usual."""
    return yaml.compose(text, Loader=_BoundedLoader)


def yaml_problem(path: object, exc: yaml.YAMLError) -> tuple[int, str]:
    """(line, "FILE:LINE: message") for what compose_yaml raised about the file at `path`."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else 1
    what = "" if isinstance(exc, YamlLimitError) else "not valid YAML: "
    return line, f"{path}:{line}: {what}{getattr(exc, 'problem', None) or exc}"
