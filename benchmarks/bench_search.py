"""Full-text search and the events timeline on a generated year of history: how long the web page's
search and its event lists take.

    python benchmarks/bench_search.py [--days 365] [--cameras 4] [--per-hour 30] [--file PATH]

History is generated into a fresh file through the real schema (daemon.state.history)
and index (daemon.state.search, its triggers filling the index as rows go in):
per camera `--per-hour` analysed windows an hour around the clock, each with a
description of 12-20 words drawn from a small vocabulary (so common words match
hundreds of thousands of rows), an alert every 3 hours per camera and two
summaries a day; and events (daemon.state.events' table): a 2-minute visit
every 20 minutes per camera, each with a story of two such sentences, the rule
`person` in the events that hold an alert. Skipped windows are not generated:
search never reads them.

Then each query is run as the page runs it (`Browser.search`, newest 50 hits),
`--repeat` times; the table prints the first run (cold caches of this process's
connection) and the median of the others, in milliseconds, and the hit count;
then the events timeline as the page asks for it (`EventBrowser.events`, newest 50).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from daemon.state.eventbrowse import EventBrowser  # noqa: E402
from daemon.state.events import EventStore  # noqa: E402
from daemon.state.history import History  # noqa: E402

START = 1_700_000_000.0
SUBJECTS = ["a person", "a man", "a woman", "a child", "two people", "a cat", "a dog", "a fox", "a delivery driver",
            "a cyclist", "a red car", "a white van", "a neighbour", "a postman", "a jogger"]
VERBS = ["walks past", "stops at", "leaves", "waits near", "crosses", "looks at", "opens", "closes", "runs along",
         "parks by", "carries a box to", "rings"]
PLACES = ["the gate", "the front door", "the driveway", "the garden", "the fence", "the garage", "the lawn",
          "the street", "the porch", "the bins", "the hedge", "the path"]
EXTRAS = ["in the rain", "at dusk", "in bright sunlight", "while talking on a phone", "with an umbrella",
          "wearing a blue jacket", "with a parcel", "quickly", "slowly", "and then leaves", "under the street light"]
RARE = "zeppelin"  # planted in one description in 100,000
RARE_STORY = "heron"  # planted in one story in 10,000
EVENT_EVERY = 20 * 60.0  # a visit every 20 minutes per camera
VISIT = 120.0


def description(rng: random.Random, i: int) -> str:
    words = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)} {rng.choice(EXTRAS)}"
    if i % 100_000 == 7:
        words += f", a {RARE} passes overhead"
    return words.capitalize() + "."


def generate(path: Path, days: float, cameras: int, per_hour: int, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    names = ["front_door", "driveway", "garden", "garage", "street", "porch", "shed", "gate"][:cameras]
    step = 3600.0 / per_hour
    counts = {"windows": 0, "results": 0, "alerts": 0, "summaries": 0}
    with History(path) as history:
        db = history._db  # bulk inserts through the real schema and triggers, one transaction a day
        for day in range(int(days)):
            db.execute("BEGIN")
            windows, results, alerts = [], [], []
            for k in range(int(86400 / step)):
                for c, camera in enumerate(names):
                    ts = START + day * 86400 + k * step + c
                    windows.append((camera, ts - 8, ts, 0.01, 1, "region", "[]", ts))
                    results.append((camera, ts - 8, ts, description(rng, counts["results"] + len(results)), ts))
                    if k % int(3 * per_hour) == 0:
                        alerts.append((camera, "person", "warning", f"{rng.choice(SUBJECTS).capitalize()} at "
                                       f"{rng.choice(PLACES)}.", ts, ts - 8, ts))
            first = db.execute("SELECT coalesce(max(id), 0) FROM windows").fetchone()[0] + 1
            db.executemany("INSERT INTO windows (camera, start, \"end\", change, analysed, reason, frame_ts, recorded) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", windows)
            db.executemany("INSERT INTO results (window_id, camera, prompt_id, question, window_start, window_end, "
                           "text, token_count, stop_reason, vit_ms, prefill_ms, decode_ms, generated, "
                           "modelled_npu_ms, model, ts) VALUES (?, ?, 'describe', 'Describe.', ?, ?, ?, 20, 'stop', "
                           "100, 200, 1000, 20, 1300, 'bench', ?)",
                           [(first + i, *row) for i, row in enumerate(results)])
            db.executemany("INSERT INTO alerts (camera, rule, severity, text, ts, window_start, window_end) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", alerts)
            day_start = START + day * 86400
            db.executemany("INSERT INTO summaries (job, period_start, period_end, text, counts, cameras, ts) "
                           "VALUES (?, ?, ?, ?, '{}', ?, ?)",
                           [(job, day_start + h * 3600 - 43200, day_start + h * 3600, f"Summary: "
                             f"{description(rng, 1)} {description(rng, 2)}", json.dumps(names), day_start + h * 3600)
                            for job, h in (("morning", 8), ("evening", 20))])
            db.execute("COMMIT")
            counts["windows"] += len(windows)
            counts["results"] += len(results)
            counts["alerts"] += len(alerts)
            counts["summaries"] += 2
    return counts


def generate_events(path: Path, days: float, cameras: int, seed: int = 1) -> int:
    """Events rows as daemon.state.events writes them (its record JSON), one transaction a day."""
    rng = random.Random(seed)
    names = ["front_door", "driveway", "garden", "garage", "street", "porch", "shed", "gate"][:cameras]
    count = 0
    with EventStore(path) as store:
        db = store._db
        for day in range(int(days)):
            db.execute("BEGIN")
            rows = []
            for k in range(int(86400 / EVENT_EVERY)):
                for c, camera in enumerate(names):
                    start = START + day * 86400 + k * EVENT_EVERY + c - 8  # a window's start
                    alerted = db.execute("SELECT 1 FROM alerts WHERE camera = ? AND window_start >= ? AND "
                                         "window_end <= ? LIMIT 1", (camera, start, start + VISIT)).fetchone()
                    story = f"{description(rng, 1)} {description(rng, 2)}"
                    if count % 10_000 == 3:
                        story += f" A {RARE_STORY} lands on the roof."
                    record = {"last_change": start + VISIT, "reasons": ["region"], "zones": [], "triggers": [],
                              "box": [0.1, 0.2, 0.5, 0.9], "rules": ["person"] if alerted else [],
                              "descriptions": [], "windows": 15, "story_from": "model", "snapshot_ts": start + 8,
                              "snapshot_change": 0.2}
                    rows.append((f"{start:.3f}-{count:06x}", camera, start, start + VISIT, json.dumps(record), story,
                                 start + 8, start + VISIT + 30))
                    count += 1
            db.executemany("INSERT INTO events (id, camera, start, \"end\", state, ended_by, record, story, opened, "
                           "updated) VALUES (?, ?, ?, ?, 'ended', 'quiet', ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
    return count


QUERIES = [  # (label, text, options)
    ("common word", "person", {}),
    ("two common words", "red car", {}),
    ("prefix as typed", "umbr", {}),
    ("rare word", RARE, {}),
    ("no hit", "helicopter", {}),
    ("common word, one camera", "dog", {"camera": "garage"}),
    ("common word, one week", "parcel", {"since": START + 200 * 86400, "until": START + 207 * 86400}),
    ("three words", "woman blue jacket", {}),
    ("rare word of a story", RARE_STORY, {}),
]
EVENT_QUERIES = [  # (label, EventBrowser.events options)
    ("newest events", {}),
    ("one camera", {"camera": "garage"}),
    ("rule person", {"rule": "person"}),
    ("severity warning", {"severity": "warning"}),
    ("severity critical (none)", {"severity": "critical"}),
    ("one camera, one week", {"camera": "garden", "since": START + 200 * 86400, "until": START + 207 * 86400}),
]


def timed(repeat: int, run) -> tuple[float, float, int]:
    """First run's ms, the median of the others, and how many rows the last run returned."""
    times, rows = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - t) * 1000)
    return times[0], statistics.median(times[1:] or times), len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--per-hour", type=int, default=30, help="analysed windows per camera per hour")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--file", type=Path, help="keep the generated history here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="the smallest case: 3 days")
    args = parser.parse_args(argv)
    if args.quick:
        args.days = 3
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "history.sqlite"
        if path.exists():
            sys.exit(f"{path} exists: give a new file")
        t0 = time.perf_counter()
        counts = generate(path, args.days, args.cameras, args.per_hour)
        events = generate_events(path, args.days, args.cameras)
        with EventBrowser(path):  # creates the index (the page's first start) over what is there
            pass
        took = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
        print(f"history: {args.days:g} days x {args.cameras} cameras: {counts['results']:,} descriptions, "
              f"{counts['alerts']:,} alerts, {counts['summaries']:,} summaries, {events:,} events with stories; "
              f"{size:.0f} MB; generated and indexed in {took:.0f} s")
        with EventBrowser(path) as browser:
            print(f"{'query':<28} {'first ms':>9} {'median ms':>10} {'hits':>5}")
            worst = 0.0
            for label, text, options in QUERIES:
                first, median, hits = timed(args.repeat, lambda: browser.search(text, **options))
                worst = max(worst, first, median)
                print(f"{label:<28} {first:9.1f} {median:10.1f} {hits:5d}")
            print(f"slowest: {worst:.1f} ms (newest 50 hits per query)")
            print(f"\n{'events timeline':<28} {'first ms':>9} {'median ms':>10} {'rows':>5}")
            worst = 0.0
            for label, options in EVENT_QUERIES:
                first, median, rows = timed(args.repeat, lambda: browser.events(**options))
                worst = max(worst, first, median)
                print(f"{label:<28} {first:9.1f} {median:10.1f} {rows:5d}")
            print(f"slowest: {worst:.1f} ms (newest 50 events per query)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
