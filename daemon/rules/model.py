"""Rules: what turns a window's results into alerts. Pure: results, rule state and `now` in;
alerts, the next state and the binary_sensor changes out. No clock, no I/O, no eval.

A trigger is an `Ask` (a choice question), a `Match` (daemon.rules.match) or an `AskJson`
(daemon.rules.answers). Per (rule, camera), `for_windows` consecutive triggering windows turn the
sensor ON and fire an alert outside `cooldown`; a non-triggering window resets; a window without
the rule's result changes nothing; `expire` turns a sensor OFF `off_delay` after its last trigger
(docs/design.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from pathlib import Path

from daemon.rules.answers import AskJson
from daemon.rules.hours import TimeRange
from daemon.rules.match import Match
from daemon.rules.template import Template, parse_template
from daemon.types import Alert, Result

SEVERITIES = ("info", "warning", "critical")
DESCRIPTION = "description"  # the prompt id whose text `match` rules read
STORY = "story"  # the prompt id of an event's story, which `on: event` rules read at the event's end

# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Ask:
    question: str
    choices: tuple[str, ...] = ("yes", "no")
    when: str = "yes"
    threshold: float = 0.5


DEFAULT_ASK_MESSAGE = parse_template("{camera}: {rule} ({probability})")
DEFAULT_MATCH_MESSAGE = parse_template("{camera}: {rule}: {text}")

@dataclass(frozen=True)
class Rule:
    id: str
    trigger: Ask | Match | AskJson
    cameras: tuple[str, ...] | None = None  # None: every camera
    for_windows: int = 1  # consecutive triggering windows before it fires
    cooldown: float = 300.0  # seconds before it can fire again on the same camera
    active: tuple[TimeRange, ...] = ()  # empty: always
    severity: str = "warning"
    snapshot: bool = False
    message: Template | None = None  # None: the default for the trigger
    off_delay: float = 300.0  # seconds a sensor holds after the last triggering window (the daemon and HA turn it off)
    zones: tuple[str, ...] = ()  # empty: anywhere; else the window's changed regions must touch one
    on: str = "window"  # window: each analysed window's description; event: an event's story at its end
    file: Path | None = None
    line: int = 0

    def applies_to(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras

    def in_zones(self, touched: frozenset[str]) -> bool:
        """Whether the window's changed regions touched one of the rule's zones (always, without zones)."""
        return not self.zones or not touched.isdisjoint(self.zones)

    def is_active(self, now: float, tz: tzinfo | None) -> bool:
        if not self.active:
            return True
        local = datetime.fromtimestamp(now, tz) if tz is not None else datetime.fromtimestamp(now).astimezone()
        return any(r.contains(local) for r in self.active)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.file else f"rule {self.id}"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    timezone: tzinfo | None = None  # of `active` hours; None: the system's

    def __len__(self) -> int:
        return len(self.rules)

    def for_camera(self, camera: str) -> list[Rule]:
        return [r for r in self.rules if r.applies_to(camera)]

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def questions(self, camera: str) -> list[tuple[str, str, tuple[str, ...]]]:
        """(prompt id, question, choices) of the camera's ask rules; rules asking the same
        question with the same choices share one prompt, named after the first of them."""
        out: dict[tuple[str, tuple[str, ...]], str] = {}
        for r in self.for_camera(camera):
            if isinstance(r.trigger, Ask):
                out.setdefault((r.trigger.question, r.trigger.choices), r.id)
        return [(rule_id, q, choices) for (q, choices), rule_id in out.items()]

    def with_timezone(self, tz: tzinfo | None) -> RuleSet:
        return replace(self, timezone=tz)


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class RuleStatus:
    """One rule on one camera."""

    count: int = 0  # consecutive triggering windows
    last_fired: float | None = None
    on: bool = False
    last_hit: float | None = None  # the last triggering window (an ON sensor expires off_delay after it)


State = Mapping[tuple[str, str], RuleStatus]  # (rule id, camera) -> status


@dataclass(frozen=True)
class StateChange:
    camera: str
    rule: str
    on: bool


@dataclass(frozen=True)
class Evaluation:
    alerts: tuple[Alert, ...]
    state: dict[tuple[str, str], RuleStatus]  # the whole next state
    changed: dict[tuple[str, str], RuleStatus]  # the entries that differ from before (to persist)
    changes: tuple[StateChange, ...]  # binary_sensor ON/OFF transitions


def rule_scope(on: str, asks: bool) -> str:
    """A rule's `on`: window (each analysed window) or event (an event's story at its end: text, so match only)."""
    if on not in ("window", "event") or (on == "event" and asks):
        raise ValueError(f"{on!r}: write window or event (an event's story at its end; match rules only)")
    return on


def find_result(rule: Rule, results: Sequence[Result]) -> Result | None:
    """The result a rule reads: the answer to its question (by question text, so a renamed rule
    still finds it), or the description."""
    t = rule.trigger
    if isinstance(t, Ask):
        return next((r for r in results if r.question == t.question and r.probabilities
                     and t.when in r.probabilities), None)
    if isinstance(t, AskJson):
        return next((r for r in results if r.question == t.question and r.probabilities is None), None)
    wanted = STORY if rule.on == "event" else DESCRIPTION
    return next((r for r in results if r.prompt_id == wanted and r.probabilities is None), None)


def triggered(rule: Rule, result: Result) -> tuple[bool, float | None]:
    """Whether the result meets the rule's condition, and the probability it was judged on."""
    t = rule.trigger
    if isinstance(t, Ask):
        p = float(result.probabilities[t.when])
        return p >= t.threshold, p
    return (t.holds if isinstance(t, AskJson) else t.matches)(result.text), None


def evaluate(rules: RuleSet, camera: str, results: Sequence[Result], state: State,
             now: float) -> Evaluation:
    """Run every rule of `camera` on one window's results at time `now`."""
    next_state = dict(state)
    changed: dict[tuple[str, str], RuleStatus] = {}
    alerts: list[Alert] = []
    changes: list[StateChange] = []
    for rule in rules.for_camera(camera):
        result = find_result(rule, results)
        if result is None:
            continue
        key = (rule.id, camera)
        before = state.get(key, RuleStatus())
        hit, p = triggered(rule, result)
        hit = hit and rule.is_active(now, rules.timezone) and rule.in_zones(result.zones)
        if not hit:
            after = RuleStatus(0, before.last_fired, False, before.last_hit)
        else:
            count = before.count + 1
            holds = count >= rule.for_windows
            fire = holds and (before.last_fired is None or now - before.last_fired >= rule.cooldown)
            after = RuleStatus(count, now if fire else before.last_fired, before.on or holds, now)
            if fire:
                alerts.append(make_alert(rule, camera, result, p, now))
        if after.on != before.on:
            changes.append(StateChange(camera, rule.id, after.on))
        if after != before:
            next_state[key] = changed[key] = after
    return Evaluation(tuple(alerts), next_state, changed, tuple(changes))


def expire(rules: RuleSet, state: State, now: float) -> Evaluation:
    """Turn OFF every sensor whose last triggering window is `off_delay` or more before `now`
    (no alerts; the count stays, so the next triggering window holds again at once)."""
    next_state = dict(state)
    changed: dict[tuple[str, str], RuleStatus] = {}
    changes: list[StateChange] = []
    for key, status in state.items():
        rule = rules.get(key[0])
        if status.on and rule is not None and _expired(rule, status, now):
            next_state[key] = changed[key] = replace(status, on=False)
            changes.append(StateChange(key[1], key[0], False))
    return Evaluation((), next_state, changed, tuple(changes))


def sensor_states(rules: RuleSet, state: State, cameras: Sequence[str], now: float) -> dict[tuple[str, str], bool]:
    """(rule id, camera) -> ON for every rule on every camera it watches, as of `now` (a rule that
    never held, or whose hold expired, is OFF)."""
    out = {}
    for rule in rules.rules:
        for camera in cameras:
            if rule.applies_to(camera):
                status = state.get((rule.id, camera), RuleStatus())
                out[(rule.id, camera)] = status.on and not _expired(rule, status, now)
    return out


def _expired(rule: Rule, status: RuleStatus, now: float) -> bool:
    return status.last_hit is None or now - status.last_hit >= rule.off_delay


def make_alert(rule: Rule, camera: str, result: Result, probability: float | None, now: float) -> Alert:
    ask = isinstance(rule.trigger, Ask)
    template = rule.message or (DEFAULT_ASK_MESSAGE if ask else DEFAULT_MATCH_MESSAGE)
    text = template.render({
        "camera": camera,
        "rule": rule.id,
        "text": rule.trigger.question if ask else result.text,
        "probability": "" if probability is None else f"{probability:.0%}",
    })
    start = result.window_start if result.window_start is not None else now
    end = result.window_end if result.window_end is not None else now
    return Alert(camera, rule.id, rule.severity, text, now, start, end, probability, zones=result.zones,
                 trigger=result.trigger)


def phases(results: Sequence[Result]) -> list[list[Result]]:
    """A window's results in the order the daemon evaluates them: rule answers (choice
    results), then the description and other text. Replay evaluates the same phases."""
    choice = [r for r in results if r.probabilities is not None]
    text = [r for r in results if r.probabilities is None]
    return [p for p in (choice, text) if p]
