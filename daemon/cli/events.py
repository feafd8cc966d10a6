"""`vlmwatch events`: list and show the events the daemon recorded (state_dir/history.sqlite).

    vlmwatch events -c config.yaml                             # the last day's events, newest first
    vlmwatch events -c config.yaml --camera door --since 7d --rule person --text parcel
    vlmwatch events -c config.yaml --show 1733400000.123-a1b2c3  # one event: story, descriptions, rows
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from daemon.cli.replay import parse_when
from daemon.errors import ConfigError, UsageError
from daemon.times import iso


def add_cli(sub) -> None:
    p = sub.add_parser(
        "events", help="list the recorded events (one per activity), or show one",
        description="List the events the daemon recorded in its history (state_dir/history.sqlite), newest"
        " first: camera, start, duration, how it ended, the rules that fired and the story. --show ID prints"
        " one event whole: its descriptions, its windows, results and alerts, and its keyframe's file.")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file (state_dir, timezone)")
    p.add_argument("--camera", help="only this camera's events")
    p.add_argument("--since", default="24h", metavar="WHEN",
                   help="events that started after: a duration ago (30m, 24h, 7d) or an ISO date/time (default 24h)")
    p.add_argument("--until", default=None, metavar="WHEN", help="and before, written like --since (default now)")
    p.add_argument("--rule", help="only events in which this rule fired")
    p.add_argument("--text", help="only events whose story or descriptions contain this text (any case)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N events (default 50)")
    p.add_argument("--show", metavar="ID", help="print this event whole (other filters are ignored)")
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.set_defaults(func=run_events)


def run_events(args) -> int:
    from daemon.config import load_config
    from daemon.mqtt.messages import event_record
    from daemon.state.events import EventStore
    from daemon.state.history import History

    if args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be at least 1")
    cfg = load_config(args.config)
    path = cfg.state_dir / "history.sqlite"
    if not path.is_file():
        raise ConfigError(f"no history at {path}: the daemon has not run with this state_dir yet"
                          f" (vlmwatch run -c {args.config})")
    now, tz = time.time(), cfg.tzinfo
    with History(path), EventStore(path, cfg.state_dir / "events") as store:
        if args.show:
            event = store.get(args.show)
            if event is None:
                raise UsageError(f"--show {args.show}: no such event in {path}; `vlmwatch events -c {args.config}`"
                                 " lists their ids")
            record = {**event_record(event), "items": store.items(event.id),
                      "keyframe": str(store.snapshot_path(event.id) or "") or None}
            print(json.dumps(record, ensure_ascii=False, indent=None if args.json else 2))
            return 0
        since = parse_when(args.since, now, tz, "--since")
        until = now + 1 if args.until is None else parse_when(args.until, now, tz, "--until")
        events = store.find(since, until, args.camera, args.rule, args.text, args.limit)
    if args.json:
        print(json.dumps([event_record(e) for e in events], ensure_ascii=False))
        return 0
    for e in events:
        rules = f" rules {','.join(e.rules)}" if e.rules else ""
        print(f"{e.id}  {e.camera}  {iso(e.start, tz, timespec='seconds')}  {e.duration:5.0f} s  "
              f"{e.state if e.state != 'ended' else e.ended_by}{rules}  {(e.story or '').strip()[:120]}")
    if not events:
        print("no events")
    return 0
