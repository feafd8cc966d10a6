"""At start: queue for MQTT what history recorded but a crash kept out of the outbox, with the message
id it was recorded with (at least once; a duplicate carries the same id). See `daemon.state.history`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from daemon.state.history import History
from daemon.types import Alert, Result, Summary

log = logging.getLogger(__name__)


class Publishing(Protocol):
    def publish_result(self, result: Result, message_id: str | None = None) -> object: ...

    def publish_alert(self, alert: Alert, message_id: str | None = None) -> object: ...

    def publish_summary(self, summary: Summary, message_id: str | None = None) -> object: ...


def queue_unqueued(history: History, publisher: Publishing) -> int:
    """Queue every unqueued row, oldest first, and mark it; returns how many there were."""
    pending = history.unqueued()
    for row in pending:
        if row.table == "alerts":
            publisher.publish_alert(row.item, message_id=row.message_id)  # type: ignore[arg-type]
        elif row.table == "summaries":
            publisher.publish_summary(row.item, message_id=row.message_id)  # type: ignore[arg-type]
        else:
            publisher.publish_result(row.item, message_id=row.message_id)  # type: ignore[arg-type]
        history.mark_queued(row.table, row.row_id)
    if pending:
        kinds = {table: sum(r.table == table for r in pending) for table in ("alerts", "results", "summaries")}
        log.warning("history: %s were recorded but never queued for MQTT (the daemon stopped in between); "
                    "queued them now, with their original message ids",
                    ", ".join(f"{n} {table}" for table, n in kinds.items() if n))
    return len(pending)
