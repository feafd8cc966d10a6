"""`vlmwatch replay`: what the rules would have fired on the recorded history.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from daemon.errors import ConfigError
from daemon.rules.replay import replay, report_json, report_lines
from daemon.state.history import History
from daemon.times import parse_duration

# ----------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    p = sub.add_parser(
        "replay", help="replay stored results through rules and print the alerts that would fire",
        description="Run the rules (the config's, or --rules DIR) over the results the daemon stored in its"
        " history (state_dir/history.sqlite) and print the alerts they would have fired, without the NPU:"
        " tune thresholds, keywords and debouncing on your own history. Ask rules need stored answers to"
        " the same question.")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file (state_dir, timezone)")
    p.add_argument("--rules", type=Path, metavar="DIR",
                   help="rule files to try (default: the config's rules directory)")
    p.add_argument("--since", default="24h", metavar="WHEN",
                   help="start: a duration ago (30m, 24h, 7d, 1w) or an ISO date/time (default 24h)")
    p.add_argument("--until", default=None, metavar="WHEN", help="end, written like --since (default now)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_replay)


def parse_when(text: str, now: float, tz, option: str) -> float:
    """'24h' or '1w' -> that long before now; '2026-11-26' or '2026-11-26T08:00' -> that time (in the rules' zone)."""
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
    from daemon.rules.files import load_rules

    cfg = load_config(args.config)
    directory = args.rules or cfg.rules
    if directory is None:
        raise ConfigError(f"{args.config} has no rules directory: pass --rules DIR")
    tz = cfg.tzinfo
    # Rules tried with --rules may watch cameras this config lacks (the shipped examples name
    # driveway): the history decides what they see, and the report says which saw nothing.
    configured = None if args.rules else [c.name for c in cfg.cameras]
    rules = load_rules(directory, cameras=configured, timezone=tz)
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
        cameras = [c.name for c in cfg.cameras]
        print("\n".join(report_lines(report, tz) + unseen_lines(rules, report, cameras)))
    return 0


def unseen_lines(rules, report, configured) -> list[str]:
    """One line per rule whose cameras have no analysed window in the period (a camera this config
    lacks, e.g. a shipped example's, or one that saw nothing), so that no alert is not read as a
    rule that never matches."""
    lines = []
    for rule in rules.rules:
        if rule.cameras is None or report.applicable.get(rule.id):
            continue
        names = ", ".join(rule.cameras)
        if not set(rule.cameras) & set(configured):
            lines.append(f"{rule.id}: watches {names}, which this config does not have; nothing to replay for it")
        else:
            lines.append(f"{rule.id}: no analysed window of its camera(s) {names} in this period")
    return lines
