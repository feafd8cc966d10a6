"""Rule files (`rules/*.yaml`): parsing with line numbers and validation (`vlmwatch check-rules`).

    - id: person_at_door_night        # unique; an MQTT topic level
      cameras: [front_door]           # default: every camera
      ask: Is a person at the door?   # or match: {any: [...], all: [...], regex: ...}, or ask_json + fields
      threshold: 0.6
      for: 2                          # consecutive triggering windows
      cooldown: 10m
      active: {time: "22:00-06:00", days: [mon-fri]}

Every option: rules/README.md. Values are read as written (`when: yes`
is the word, `22:00` a time); every problem is one line, `FILE:LINE: rule id: message`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.config.base import NAME_RE, NAME_RULE
from daemon.config.yamlfiles import compose_yaml, yaml_problem
from daemon.errors import ConfigError
from daemon.rules.hours import TimeRange, parse_days, parse_time_range
from daemon.rules.answers import AskJson
from daemon.rules.asks import AskReader
from daemon.rules.match import Match
from daemon.rules.model import DESCRIPTION, SEVERITIES, Ask, Rule, RuleSet, rule_scope
from daemon.rules.template import Template, parse_template
from daemon.times import parse_duration

RULE_ID = NAME_RE  # an MQTT topic level and HA object id; always fullmatch
OPTIONS = ("id", "cameras", "ask", "choices", "when", "threshold", "match", "ask_json", "fields", "for", "cooldown",
           "active", "severity", "snapshot", "message", "off_delay", "zones", "on")
ASK_ONLY = ("choices", "when", "threshold")
MATCH_OPTIONS = ("any", "all", "regex")
ACTIVE_OPTIONS = ("time", "days")


# ----------------------------------------------------------------------------- loading


def rule_files(directory: Path) -> list[Path]:
    directory = Path(directory)
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise ConfigError(f"rule directory {directory} does not exist; create it or point rules: at your rule files")
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def check_rules(directory: Path, cameras: Iterable[str] | None = None,
                zones: Mapping[str, Iterable[str]] | None = None) -> tuple[RuleSet, list[str]]:
    """The valid rules and every problem as `FILE:LINE: rule id: message`, in file and line order.

    With `cameras` (the configured names), rules naming other cameras are problems too; with
    `zones` (camera -> its zone names), so are rules naming a zone none of their cameras has."""
    known = None if cameras is None else set(cameras)
    zones = None if zones is None else {camera: set(names) for camera, names in zones.items()}
    rules: list[Rule] = []
    problems: list[str] = []
    first: dict[str, str] = {}  # id -> FILE:LINE where it is first defined
    for path in rule_files(directory):
        found: list[tuple[int, str]] = []
        for parsed in parse_file(path, known, zones):
            found += parsed.problems
            if parsed.id is not None and parsed.id in first:
                found.append((parsed.line, f"{path}:{parsed.line}: {parsed.id}: duplicate id: also defined at"
                                           f" {first[parsed.id]}"))
                continue
            if parsed.id is not None:
                first[parsed.id] = f"{path}:{parsed.line}"
            if parsed.rule is not None and not parsed.problems:
                rules.append(parsed.rule)
        problems += [line for _, line in sorted(found, key=lambda p: p[0])]
    return RuleSet(tuple(rules)), problems


def load_rules(directory: Path, cameras: Iterable[str] | None = None, timezone=None,
               zones: Mapping[str, Iterable[str]] | None = None) -> RuleSet:
    """The rule set, or ConfigError listing every problem."""
    rules, problems = check_rules(directory, cameras, zones)
    if problems:
        raise ConfigError("\n".join(problems))
    return rules.with_timezone(timezone)


@dataclass(frozen=True)
class Parsed:
    """One rule entry of a file: its id (if readable), line, the rule (if valid) and its problems."""

    id: str | None
    line: int
    rule: Rule | None
    problems: list[tuple[int, str]]


def parse_file(path: Path, cameras: set[str] | None = None, zones: dict[str, set[str]] | None = None) -> list[Parsed]:
    try:
        node = compose_yaml(path.read_text(encoding="utf-8"))  # bounded: an alias bomb is refused here
    except (OSError, UnicodeDecodeError) as exc:
        return [Parsed(None, 1, None, [(1, f"{path}:1: cannot read the rule file ({exc})")])]
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(path, exc)
        return [Parsed(None, line, None, [(line, problem)])]
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        line = _line(node)
        return [Parsed(None, line, None,
                       [(line, f"{path}:{line}: the file must hold a list of rules, each starting with '- id:'")])]
    out = []
    for index, item in enumerate(node.value):
        reader = _RuleReader(path, index, item, cameras, zones)
        rule = reader.rule()
        out.append(Parsed(reader.rule_id, _line(item), rule, reader.problems))
    return out


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Collection:
    """What `_construct` gives for a list or mapping: options here take scalars, and a message
    must never render an aliased structure expanded ("got a list", not a billion items)."""

    def __init__(self, node: yaml.Node) -> None:
        self.kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"

    def __repr__(self) -> str:
        return self.kind


def _construct(node: yaml.Node) -> Any:
    """A scalar's value (YAML 1.1 types, as SafeLoader reads it), or a `_Collection`."""
    if not isinstance(node, yaml.ScalarNode):
        return _Collection(node)
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


@dataclass
class _RuleReader(AskReader):
    """Reads one rule mapping, collecting problems instead of stopping at the first."""

    path: Path
    index: int
    node: yaml.Node
    cameras: set[str] | None
    zones: dict[str, set[str]] | None = None  # camera -> its configured zone names

    def __post_init__(self) -> None:
        self._value = _construct  # for AskReader
        self.problems: list[tuple[int, str]] = []
        self.rule_id: str | None = None
        self.label = f"rule {self.index + 1}"
        self.options: dict[str, yaml.Node] = {}
        self.keys: dict[str, yaml.Node] = {}

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append((_line(node), f"{self.path}:{_line(node)}: {self.label}: {message}"))

    def rule(self) -> Rule | None:
        if not isinstance(self.node, yaml.MappingNode):
            self.problem(self.node, "a rule must be a mapping of options, starting with 'id:'")
            return None
        id_node = next((v for k, v in self.node.value if k.value == "id"), None)
        rule_id = self.rule_id = self._id(id_node)
        self.options = self._mapping(self.node, OPTIONS, "", "rule options are")
        trigger = self._trigger()
        kwargs: dict[str, Any] = {}
        for key, parse in (("cameras", self._cameras), ("for", self._for), ("cooldown", self._duration),
                           ("off_delay", self._duration), ("active", self._active), ("severity", self._severity),
                           ("snapshot", self._snapshot), ("message", self._message), ("zones", self._zones),
                           ("on", lambda node: rule_scope(self._text(node, "on"), "ask" in self.options))):
            if key in self.options:
                try:
                    kwargs[key] = parse(self.options[key])
                except ValueError as exc:
                    self.problem(self.keys[key], f"{key}: {exc}")
        message: Template | None = kwargs.get("message")
        if message is not None and not isinstance(trigger, Ask) and "probability" in message.fields:
            self.problem(self.keys["message"], "message: {probability} is only known for ask rules")
        if "zones" in kwargs:
            self._check_zones(kwargs["zones"], kwargs.get("cameras"))
        if self.problems or rule_id is None or trigger is None:
            return None
        renames = {"for": "for_windows"}
        return Rule(rule_id, trigger, file=self.path, line=_line(self.node),
                    **{renames.get(k, k): v for k, v in kwargs.items()})

    # -- structure -----------------------------------------------------------

    def _mapping(self, node: yaml.MappingNode, allowed: tuple[str, ...], prefix: str,
                 listing: str) -> dict[str, yaml.Node]:
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {prefix + close[0]!r}?" if close else f"{listing}: {', '.join(allowed)}"
                self.problem(key_node, f"unknown option {prefix + key!r}; {hint}")
            elif key in out:
                self.problem(key_node, f"option {prefix + key!r} is given twice")
            else:
                out[key] = value_node
                self.keys[prefix + key] = key_node
        return out

    def _text(self, node: yaml.Node, what: str) -> str:
        """A scalar as written (so yes stays 'yes'); ValueError if empty or not a scalar."""
        if not isinstance(node, yaml.ScalarNode):
            raise ValueError(f"{what} must be text")
        if _construct(node) is None or not str(node.value).strip():
            raise ValueError(f"{what} is empty")
        return str(node.value)

    def _texts(self, node: yaml.Node, what: str) -> list[str]:
        """A list of scalars (or one scalar) as written."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        return [self._text(item, what) for item in items]

    # -- options -------------------------------------------------------------

    def _id(self, node: yaml.Node | None) -> str | None:
        if node is None:
            self.problem(self.node, "id is missing: give every rule a unique id, e.g. id: person_at_door")
            return None
        rule_id = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
        if not RULE_ID.fullmatch(rule_id):
            self.problem(node, f"id {rule_id[:80] or node.tag!r} must be {NAME_RULE} (it becomes an MQTT topic level)")
            return None
        self.label = rule_id
        if rule_id == DESCRIPTION:
            self.problem(node, f"id {DESCRIPTION!r} is reserved for the description prompt; choose another")
        return rule_id

    def _trigger(self) -> Ask | Match | AskJson | None:
        if "ask_json" in self.options:  # a JSON answer (daemon.rules.answers); `when` is its condition
            extra = [k for k in ("ask", "match", "choices", "threshold") if k in self.options]
            for key in extra:
                self.problem(self.keys[key], f"{key} does not apply to ask_json rules (fields and when do)")
            return None if extra else self._ask_json()
        if "fields" in self.options:
            self.problem(self.keys["fields"], "fields only applies to ask_json rules")
        has_ask, has_match = "ask" in self.options, "match" in self.options
        if has_ask == has_match:
            where = self.keys["match"] if has_ask else self.node
            self.problem(where, "give ask (a question) or match (words or a regex in the description), not both"
                         if has_ask else "a rule needs a trigger: ask (a question) or match (words or a regex"
                         " in the description)")
            return None
        if has_match:
            for key in ASK_ONLY:
                if key in self.options:
                    self.problem(self.keys[key], f"{key} only applies to ask rules; this one has match")
            return self._match(self.options["match"])
        return self._ask()

    def _match(self, node: yaml.Node) -> Match | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(self.keys["match"], "match takes any, all or regex, e.g. match: {any: [smoke, fire]}")
            return None
        options = self._mapping(node, MATCH_OPTIONS, "match.", "match takes")
        if not options:
            self.problem(self.keys["match"], "match needs any, all or regex")
            return None
        try:
            words = {k: self._texts(options[k], "a keyword") if k in options else [] for k in ("any", "all")}
        except ValueError as exc:
            self.problem(node, f"match: {exc}")
            return None
        pattern = None
        if "regex" in options:
            try:
                pattern = self._text(options["regex"], "regex")
            except ValueError as exc:
                self.problem(self.keys["match.regex"], f"match.{exc}")
                return None
        try:
            return Match.build(words["any"], words["all"], pattern)
        except ValueError as exc:
            self.problem(self.keys.get("match.regex", self.keys["match"]), f"match.regex: {exc}")
            return None

    def _cameras(self, node: yaml.Node) -> tuple[str, ...]:
        names = tuple(self._texts(node, "a camera name"))
        if self.cameras is not None:
            unknown = [n for n in names if n not in self.cameras]
            if unknown:
                raise ValueError(f"camera {unknown[0]!r} is not configured (cameras: {', '.join(sorted(self.cameras))});"
                                 " name a configured camera, or leave cameras out to watch every camera")
        return names

    def _for(self, node: yaml.Node) -> int:
        value = _construct(node)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"give a whole number of consecutive windows, at least 1 (got {value!r})")
        return value

    def _duration(self, node: yaml.Node) -> float:
        return parse_duration(self._text(node, "the duration"), None, allow_zero=True)  # cooldown: 0s fires every time

    def _active(self, node: yaml.Node) -> tuple[TimeRange, ...]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise ValueError("give at least one time range, e.g. 22:00-06:00")
        return tuple(self._time_range(item) for item in items)

    def _time_range(self, node: yaml.Node) -> TimeRange:
        if isinstance(node, yaml.ScalarNode):
            return TimeRange(*parse_time_range(self._text(node, "a time range")))
        if not isinstance(node, yaml.MappingNode):
            raise ValueError("write a time range such as 22:00-06:00, or {time: 22:00-06:00, days: [mon-fri]}")
        options = self._mapping(node, ACTIVE_OPTIONS, "active.", "active takes")  # reports unknown keys itself
        start, end = parse_time_range(self._text(options["time"], "time")) if "time" in options else (0, 1440)
        days = parse_days(self._texts(options["days"], "a day")) if "days" in options else frozenset(range(7))
        return TimeRange(start, end, days)

    def _severity(self, node: yaml.Node) -> str:
        value = self._text(node, "severity")
        if value not in SEVERITIES:
            raise ValueError(f"{value!r} is not one of {', '.join(SEVERITIES)}")
        return value

    def _snapshot(self, node: yaml.Node) -> bool:
        value = _construct(node)
        if not isinstance(value, bool):
            raise ValueError(f"write true or false (got {value!r})")
        return value

    def _message(self, node: yaml.Node) -> Template:
        return parse_template(self._text(node, "message"))

    def _zones(self, node: yaml.Node) -> tuple[str, ...]:
        names = tuple(self._texts(node, "a zone name"))
        if not names:
            raise ValueError("give at least one zone, e.g. zones: [porch]")
        return names

    def _check_zones(self, names: tuple[str, ...], cameras: tuple[str, ...] | None) -> None:
        """Each zone must be configured (cameras[].zones) on at least one of the rule's cameras."""
        if self.zones is None:
            return
        watched = [c for c in self.zones if cameras is None or c in cameras]
        known = set().union(*(self.zones[c] for c in watched)) if watched else set()
        for name in names:
            if name not in known:
                where = ", ".join(sorted(known)) if known else "none"
                self.problem(self.keys["zones"], f"zones: zone {name!r} is not configured on the rule's cameras "
                             f"({', '.join(watched) or 'none'}; their zones: {where}); add it under cameras[].zones")
