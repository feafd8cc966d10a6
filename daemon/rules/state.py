"""Rule state (counts, last fired, ON/OFF) in the history file, so a restart neither forgets a
cooldown nor re-fires a debounced rule. Only changed entries are written, in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from daemon.rules.model import RuleStatus
from daemon.state.store import Store

RULE_STATE_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE rule_state (
            rule TEXT NOT NULL, camera TEXT NOT NULL,
            count INTEGER NOT NULL,              -- consecutive triggering windows
            last_fired REAL,                     -- POSIX seconds, NULL: never
            is_on INTEGER NOT NULL,              -- the binary_sensor
            updated REAL NOT NULL,
            PRIMARY KEY (rule, camera))""",
    ],
    [  # when the rule last triggered: an ON sensor turns OFF off_delay after it (a state from before: its update)
        "ALTER TABLE rule_state ADD COLUMN last_hit REAL",
        "UPDATE rule_state SET last_hit = updated WHERE count > 0 OR is_on = 1",
    ],
]


class RuleStateStore(Store):
    """`RuleStateStore(path).open()`, `load()`, `save(changed, now)`, `close()`. Thread-safe."""

    component, migrations, what = "rules", RULE_STATE_MIGRATIONS, "the rule state"

    def load(self) -> dict[tuple[str, str], RuleStatus]:
        rows = self._run(lambda db: db.execute(
            "SELECT rule, camera, count, last_fired, is_on, last_hit FROM rule_state").fetchall(), "read")
        return {(rule, camera): RuleStatus(count, last_fired, bool(on), last_hit)
                for rule, camera, count, last_fired, on, last_hit in rows}

    def save(self, changed: Mapping[tuple[str, str], RuleStatus], now: float) -> None:
        if not changed:
            return
        rows = [(rule, camera, s.count, s.last_fired, int(s.on), s.last_hit, now) for (rule, camera), s in changed.items()]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO rule_state (rule, camera, count, last_fired, is_on, last_hit, updated) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule, camera) DO UPDATE SET "
                               "count = excluded.count, last_fired = excluded.last_fired, is_on = excluded.is_on, "
                               "last_hit = excluded.last_hit, updated = excluded.updated", rows)

        self._run(write, "write")
