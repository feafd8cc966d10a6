"""The daemon's side of rules: a camera's ask prompts, evaluation of each batch of results, and where
alerts go (history, MQTT alert, rule state, snapshot). `evaluate` stays pure; this holds the state.

Threads: NPU workers (results), the main loop (`expire` every second) and the publisher
(`sensor_states` on every connect), kept apart by one lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Callable, Protocol

from daemon.rules.answers import AskJson
from daemon.rules.model import RuleSet, evaluate, expire, sensor_states
from daemon.rules.state import RuleStateStore
from daemon.types import Alert, Prompt, Result, Window, new_message_id

log = logging.getLogger(__name__)


class AlertPublisher(Protocol):
    def publish_alert(self, alert: Alert, message_id: str | None = None) -> str: ...

    def publish_rule_state(self, camera: str, rule: str, on: bool) -> None: ...


class AlertSink(Protocol):
    def record_alert(self, alert: Alert, message_id: str | None = None) -> int: ...

    def mark_queued(self, table: str, row_id: int) -> None: ...


Snapshot = Callable[[Window, "Window | None"], bytes]  # (window, previous analysed window) -> JPEG


class RuleRunner:
    def __init__(self, rules: RuleSet, store: RuleStateStore | None, history: AlertSink,
                 publisher: AlertPublisher | None = None, snapshot: Snapshot | None = None):
        self.rules, self.store, self.history, self.publisher = rules, store, history, publisher
        self.snapshot = snapshot  # None: alerts go out without a picture
        self.state = store.load() if store is not None else {}
        self._lock = threading.Lock()  # self.state: held only for in-memory work (paho's thread reads it)
        self._io = threading.Lock()  # one evaluation at a time with what it stores and publishes

    def prompts(self, camera: str) -> list[Prompt]:
        """Choice prompts of the camera's ask rules, then JSON prompts of its ask_json rules (one per distinct
        question)."""
        prompts = [Prompt(prompt_id, question, choices) for prompt_id, question, choices
                   in self.rules.questions(camera)]
        json: dict[tuple[str, str], Prompt] = {}
        for rule in self.rules.for_camera(camera):
            t = rule.trigger
            if isinstance(t, AskJson):
                json.setdefault((t.question, t.schema), Prompt(rule.id, t.question, max_new_tokens=t.max_tokens,
                                                               schema=t.schema))
        return prompts + list(json.values())

    def on_results(self, window: Window, results: Sequence[Result], previous: Window | None = None) -> list[Alert]:
        """Evaluate one batch of a window's results; record and publish what fires. `previous`:
        the camera's last analysed window before this one, for choosing the snapshot frame."""
        if not results or not len(self.rules):
            return []
        now = max(r.ts for r in results)  # replay evaluates at the same time
        with self._io:
            return self._apply(window, results, previous, now)

    def _apply(self, window: Window, results: Sequence[Result], previous: Window | None, now: float) -> list[Alert]:
        with self._lock:
            evaluation = evaluate(self.rules, window.camera, results, self.state, now)
            self.state = evaluation.state
        alerts = [self._with_snapshot(alert, window, previous) if self._wants_snapshot(alert) and window.frames else alert
                  for alert in evaluation.alerts]
        # Recorded before the state that says they fired, and before queueing (which a restart finishes
        # from history): a crash anywhere here may repeat an alert, never lose one.
        recorded = []
        for alert in alerts:
            message_id = new_message_id() if self.publisher is not None else None
            recorded.append((alert, message_id, self.history.record_alert(alert, message_id)))
        if self.store is not None:
            self.store.save(evaluation.changed, now)
        for alert, message_id, row_id in recorded:
            if self.publisher is not None:
                self.publisher.publish_alert(alert, message_id)  # also turns the rule's sensor ON
                self.history.mark_queued("alerts", row_id)
            log.info("camera %s: rule %s fired (%s): %s", alert.camera, alert.rule, alert.severity, alert.text)
        fired = {a.rule for a in alerts}
        for change in evaluation.changes:
            if self.publisher is not None and not (change.on and change.rule in fired):
                self.publisher.publish_rule_state(change.camera, change.rule, change.on)
        return alerts

    def expire(self, now: float) -> None:
        """Turn OFF (persist, publish) every sensor whose hold ran out: `off_delay` seconds without a
        triggering window, whether the windows in between were skipped by the gate or never came."""
        with self._io:
            with self._lock:
                evaluation = expire(self.rules, self.state, now)
                self.state = evaluation.state
            if not evaluation.changed:
                return
            if self.store is not None:
                self.store.save(evaluation.changed, now)
            for change in evaluation.changes:
                log.info("camera %s: rule %s no longer holds (no triggering window for its off_delay): OFF",
                         change.camera, change.rule)
                if self.publisher is not None:
                    self.publisher.publish_rule_state(change.camera, change.rule, change.on)

    def sensor_states(self, cameras: Sequence[str], now: float) -> dict[tuple[str, str], bool]:
        """(rule, camera) -> ON for every rule on every camera it watches (any thread)."""
        with self._lock:
            return sensor_states(self.rules, self.state, cameras, now)

    def _wants_snapshot(self, alert: Alert) -> bool:
        rule = self.rules.get(alert.rule)
        return rule is not None and rule.snapshot and self.snapshot is not None

    def _with_snapshot(self, alert: Alert, window: Window, previous: Window | None) -> Alert:
        try:
            return replace(alert, snapshot_jpeg=self.snapshot(window, previous))
        except Exception:  # noqa: BLE001 - an alert without a picture beats no alert
            log.exception("camera %s: could not make the snapshot for rule %s; alerting without it",
                          alert.camera, alert.rule)
            return alert
