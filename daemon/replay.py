"""`vlmwatch replay`: run rules over stored results, without the NPU, to tune them.

    vlmwatch replay -c config.yaml --rules rules/ --since 24h [--json]

Windows analysed in the period are replayed in the order they were recorded,
from an empty rule state, through the same `evaluate` and in the same phases
as the daemon (rule answers first, then the description, each at the time its
last result was produced), so the daemon and replay agree on what fires.
`match` rules read the stored descriptions. `ask` rules need stored answers
to the same question (the daemon asks only the questions its rules had at
the time): windows without one are counted and reported per rule.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from daemon.errors import ConfigError
from daemon.history import History
from daemon.rules import Ask, RuleSet, evaluate, find_result, phases
from daemon.types import Alert


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
        results = [row.result for row in history.window_results(window.id)]
        for rule in rules.for_camera(window.camera):
            applicable[rule.id] += 1
            if isinstance(rule.trigger, Ask) and find_result(rule, results) is None:
                never_asked[rule.id] += 1
        for phase in phases(results):
            evaluation = evaluate(rules, window.camera, phase, state, now=max(r.ts for r in phase))
            state = evaluation.state
            alerts += evaluation.alerts
    return ReplayReport(since, until, len(windows), tuple(alerts), dict(never_asked), dict(applicable))


# ----------------------------------------------------------------------------- output


def _iso(ts: float, tz) -> str:
    return (datetime.fromtimestamp(ts, tz) if tz else datetime.fromtimestamp(ts).astimezone()).isoformat(
        timespec="seconds")


def alert_dict(alert: Alert, tz) -> dict:
    return {"ts": _iso(alert.ts, tz), "camera": alert.camera, "rule": alert.rule, "severity": alert.severity,
            "text": alert.text, "window": {"start": _iso(alert.window_start, tz), "end": _iso(alert.window_end, tz)},
            "probability": None if alert.probability is None else round(alert.probability, 6)}


def report_json(report: ReplayReport, tz) -> dict:
    return {"since": _iso(report.since, tz), "until": _iso(report.until, tz), "windows": report.windows,
            "alerts": [alert_dict(a, tz) for a in report.alerts], "never_asked": report.never_asked}


def report_lines(report: ReplayReport, tz) -> list[str]:
    lines = [f"{_iso(a.ts, tz)}  {a.camera}  {a.rule}  {a.severity}  {a.text}" for a in report.alerts]
    lines.append(f"{len(report.alerts)} alert(s) from {report.windows} analysed window(s) between "
                 f"{_iso(report.since, tz)} and {_iso(report.until, tz)}")
    for rule_id, n in sorted(report.never_asked.items()):
        lines.append(f"{rule_id}: no stored answer to its question in {n} of {report.applicable[rule_id]} window(s);"
                     " the daemon stores answers only to the questions its rules asked at the time")
    return lines


# ----------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    p = sub.add_parser("replay", help="replay stored results through rules and print the alerts that would fire")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file (state_dir, timezone)")
    p.add_argument("--rules", type=Path, metavar="DIR",
                   help="rule files to try (default: the config's rules directory)")
    p.add_argument("--since", default="24h", metavar="WHEN",
                   help="start: a duration ago (30m, 24h, 7d) or an ISO date/time (default 24h)")
    p.add_argument("--until", default=None, metavar="WHEN", help="end, written like --since (default now)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_replay)


def parse_when(text: str, now: float, tz, option: str) -> float:
    """'24h' -> now - 24 h; '2026-11-26' or '2026-11-26T08:00' -> that time (in the rules' zone)."""
    from daemon.rule_files import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: write a duration ago (30m, 24h, 7d) or an ISO date/time"
                          " (2026-11-26 or 2026-11-26T08:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz) if tz else when.astimezone()
    return when.timestamp()


def run_replay(args) -> int:
    from daemon.config import load_config
    from daemon.rule_files import load_rules

    cfg = load_config(args.config)
    directory = args.rules or cfg.rules
    if directory is None:
        raise ConfigError(f"{args.config} has no rules directory: pass --rules DIR")
    tz = cfg.tzinfo
    rules = load_rules(directory, cameras=[c.name for c in cfg.cameras], timezone=tz)
    now = time.time()
    since = parse_when(args.since, now, tz, "--since")
    until = now if args.until is None else parse_when(args.until, now, tz, "--until")
    path = cfg.state_dir / "history.sqlite"
    if not path.is_file():
        raise ConfigError(f"no history at {path}: the daemon has not run with this state_dir yet"
                          f" (vlmwatch run -c {args.config})")
    with History(path) as history:
        report = replay(history, rules, since, until)
    if args.json:
        print(json.dumps(report_json(report, tz), ensure_ascii=False))
    else:
        print("\n".join(report_lines(report, tz)))
    return 0
