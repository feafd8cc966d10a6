"""`vlmwatch replay`: run rules over stored results, without the NPU, to tune them.

    vlmwatch replay -c config.yaml --rules rules/ --since 24h [--json]

Same `evaluate`, same phases and order as the daemon, from an empty state, so both agree on what
fires; `ask` rules need stored answers to their question (windows without one are counted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from daemon.rules.answers import AskJson
from daemon.rules.model import Ask, RuleSet, evaluate, find_result, phases
from daemon.times import iso
from daemon.types import Alert

if TYPE_CHECKING:  # the CLI passes a History in; rules do not import the service
    from daemon.state.history import History


@dataclass(frozen=True)
class ReplayReport:
    since: float
    until: float
    windows: int  # analysed windows replayed
    alerts: tuple[Alert, ...]
    never_asked: dict[str, int] = field(default_factory=dict)  # ask rule -> its windows without an answer
    applicable: dict[str, int] = field(default_factory=dict)  # rule -> windows of its cameras


def replay(history: History, rules: RuleSet, since: float, until: float) -> ReplayReport:
    state: dict = {}
    alerts: list[Alert] = []
    never_asked: Counter[str] = Counter()
    applicable: Counter[str] = Counter()
    windows = history.windows(since, until, analysed=True)
    for window in windows:
        # Zones and triggers are the window's: stored with it, handed to the rules on its results.
        results = [replace(row.result, zones=window.zones, trigger=window.trigger)
                   for row in history.window_results(window.id)]
        for rule in rules.for_camera(window.camera):
            applicable[rule.id] += 1
            if isinstance(rule.trigger, (Ask, AskJson)) and find_result(rule, results) is None:
                never_asked[rule.id] += 1
        for phase in phases(results):
            evaluation = evaluate(rules, window.camera, phase, state, now=max(r.ts for r in phase))
            state = evaluation.state
            alerts += evaluation.alerts
    return ReplayReport(since, until, len(windows), tuple(alerts), dict(never_asked), dict(applicable))


# ----------------------------------------------------------------------------- output


def alert_dict(alert: Alert, tz) -> dict:
    """`tz`: the rules' zone (None: the system's); times are shown to the second."""
    return {"ts": iso(alert.ts, tz, "seconds"), "camera": alert.camera, "rule": alert.rule,
            "severity": alert.severity, "text": alert.text,
            "window": {"start": iso(alert.window_start, tz, "seconds"), "end": iso(alert.window_end, tz, "seconds")},
            "probability": None if alert.probability is None else round(alert.probability, 6)}


def report_json(report: ReplayReport, tz) -> dict:
    return {"since": iso(report.since, tz, "seconds"), "until": iso(report.until, tz, "seconds"),
            "windows": report.windows, "alerts": [alert_dict(a, tz) for a in report.alerts],
            "never_asked": report.never_asked}


def report_lines(report: ReplayReport, tz) -> list[str]:
    lines = [f"{iso(a.ts, tz, 'seconds')}  {a.camera}  {a.rule}  {a.severity}  {a.text}" for a in report.alerts]
    lines.append(f"{len(report.alerts)} alert(s) from {report.windows} analysed window(s) between "
                 f"{iso(report.since, tz, 'seconds')} and {iso(report.until, tz, 'seconds')}")
    for rule_id, n in sorted(report.never_asked.items()):
        lines.append(f"{rule_id}: no stored answer to its question in {n} of {report.applicable[rule_id]} window(s);"
                     " the daemon stores answers only to the questions its rules asked at the time")
    return lines
