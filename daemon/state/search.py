"""Full-text search over history (descriptions, alerts, summaries, events' stories) in an SQLite FTS5 index.

Triggers keep the index in step with its tables, so it cannot drift. Row ids are `kind << 40 | id`,
so each kind's newest hits are found by walking its rowid range backwards (docs/design.md).
Stories' triggers are a component of their own (`search_events`), added once the events table exists.
`match_expression` quotes every word: user text never reaches FTS5's query syntax.
"""

from __future__ import annotations

import re

KINDS = {"result": 1, "alert": 2, "summary": 3, "event": 4}  # kind -> rowid block
SHIFT = 40  # ids below 2**40 (a trillion rows) per table

_INDEXED = {  # table -> (kind, text, tags, camera): what of a row is searched
    "results": ("result", "new.text", "new.prompt_id", "new.camera"),
    "alerts": ("alert", "new.text", "new.rule || ' ' || new.severity", "new.camera"),
    "summaries": ("summary", "new.text", "new.job", "''"),
}


def _rowid(kind: str, row: str, column: str = "id") -> str:
    return f"(({KINDS[kind]} << {SHIFT}) + {row}.{column})"


def _migration() -> list[str]:
    statements = [
        # text and tags are searched; camera only filters. unicode61 folds case and diacritics.
        "CREATE VIRTUAL TABLE search USING fts5(text, tags, camera UNINDEXED, "
        "tokenize = 'unicode61 remove_diacritics 2')",
        # the timeline joins alerts to their window by camera and start
        "CREATE INDEX IF NOT EXISTS alerts_by_window ON alerts (camera, window_start)",
        "CREATE INDEX IF NOT EXISTS windows_by_start ON windows (camera, start)",  # and an alert to its window
    ]
    for table, (kind, text, tags, camera) in _INDEXED.items():
        statements += [
            f"CREATE TRIGGER search_{table}_insert AFTER INSERT ON {table} BEGIN "
            f"INSERT INTO search (rowid, text, tags, camera) VALUES ({_rowid(kind, 'new')}, {text}, {tags}, "
            f"{camera}); END",
            f"CREATE TRIGGER search_{table}_delete AFTER DELETE ON {table} BEGIN "
            f"DELETE FROM search WHERE rowid = {_rowid(kind, 'old')}; END",
            f"INSERT INTO search (rowid, text, tags, camera) SELECT {_rowid(kind, 'new')}, {text}, {tags}, {camera} "
            f"FROM {table} AS new",
        ]
    return statements


# One entry per schema version of the `search` component (daemon.state.store.migrate); append, never edit.
SEARCH_MIGRATIONS: list[list[str]] = [_migration()]

# An event's entry: its story; tags "story" and the rules that fired in it. The events table has a text
# primary key, so its (implicit) rowid numbers the entries: stable, as nothing VACUUMs the history file.
_EVENT_INSERT = (f"INSERT INTO search (rowid, text, tags, camera) SELECT {_rowid('event', 'new', 'rowid')}, new.story, "
                 "'story ' || coalesce((SELECT group_concat(value, ' ') FROM json_each(new.record, '$.rules')), ''), "
                 "new.camera")


def _event_migration() -> list[str]:
    old_rowid = _rowid("event", "old", "rowid")
    return [
        f"CREATE TRIGGER search_events_insert AFTER INSERT ON events WHEN new.story IS NOT NULL BEGIN "
        f"{_EVENT_INSERT}; END",
        # an event's row is rewritten at every change; its entry only when the story (or a rule) changes
        f"CREATE TRIGGER search_events_update AFTER UPDATE OF story, record ON events WHEN old.story IS NOT "
        f"new.story OR (new.story IS NOT NULL AND json_extract(old.record, '$.rules') IS NOT "
        f"json_extract(new.record, '$.rules')) BEGIN DELETE FROM search WHERE rowid = {old_rowid}; "
        f"{_EVENT_INSERT} WHERE new.story IS NOT NULL; END",
        f"CREATE TRIGGER search_events_delete AFTER DELETE ON events BEGIN "
        f"DELETE FROM search WHERE rowid = {old_rowid}; END",
        f"{_EVENT_INSERT} FROM events AS new WHERE new.story IS NOT NULL",
    ]


# The `search_events` component: applied once both the index and the events table exist.
EVENT_SEARCH_MIGRATIONS: list[list[str]] = [_event_migration()]

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 12


def match_expression(text: str) -> str | None:
    """FTS5 query for what a person typed: every word must occur (the last may be the start of a
    word, as they type). None when the text has no word in it. Quotes and operators are words' edges."""
    words = _WORD.findall(text)[:MAX_WORDS]
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def kind_range(kind: str, first_id: int = 0, last_id: int | None = None) -> tuple[int, int]:
    """The rowid range [low, high] of `kind`'s entries for its table's ids first_id..last_id."""
    base = KINDS[kind] << SHIFT
    return base + first_id, base + (last_id if last_id is not None else (1 << SHIFT) - 1)


def split_rowid(rowid: int) -> tuple[str, int]:
    kind_code, row_id = rowid >> SHIFT, rowid & ((1 << SHIFT) - 1)
    kind = next(k for k, code in KINDS.items() if code == kind_code)
    return kind, row_id
