"""The daemon's side of rules: prompts for a camera's ask rules, evaluation of each batch
of results, and where alerts go (history, MQTT alert + rule state + snapshot).

`evaluate` stays pure; this class holds the state between windows, persists
what changed and does the I/O. It runs on the NPU worker thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Callable, Protocol

from daemon.rules.model import RuleSet, evaluate
from daemon.rules.state import RuleStateStore
from daemon.types import Alert, Prompt, Result, Window

log = logging.getLogger(__name__)


class AlertPublisher(Protocol):
    def publish_alert(self, alert: Alert) -> str: ...

    def publish_rule_state(self, camera: str, rule: str, on: bool) -> None: ...


class AlertSink(Protocol):
    def record_alert(self, alert: Alert) -> int: ...


Snapshot = Callable[[Window, "Window | None"], bytes]  # (window, previous analysed window) -> JPEG


class RuleRunner:
    def __init__(self, rules: RuleSet, store: RuleStateStore | None, history: AlertSink,
                 publisher: AlertPublisher | None = None, snapshot: Snapshot | None = None):
        self.rules, self.store, self.history, self.publisher = rules, store, history, publisher
        self.snapshot = snapshot  # None: alerts go out without a picture
        self.state = store.load() if store is not None else {}

    def prompts(self, camera: str) -> list[Prompt]:
        """Choice prompts of the camera's ask rules (one per distinct question)."""
        return [Prompt(prompt_id, question, choices) for prompt_id, question, choices in self.rules.questions(camera)]

    def on_results(self, window: Window, results: Sequence[Result], previous: Window | None = None) -> list[Alert]:
        """Evaluate one batch of a window's results; record and publish what fires. `previous`:
        the camera's last analysed window before this one, for choosing the snapshot frame."""
        if not results or not len(self.rules):
            return []
        now = max(r.ts for r in results)  # replay evaluates at the same time
        evaluation = evaluate(self.rules, window.camera, results, self.state, now)
        self.state = evaluation.state
        if self.store is not None:
            self.store.save(evaluation.changed, now)
        alerts = []
        for alert in evaluation.alerts:
            rule = self.rules.get(alert.rule)
            if rule is not None and rule.snapshot and self.snapshot is not None:
                alert = self._with_snapshot(alert, window, previous)
            self.history.record_alert(alert)
            if self.publisher is not None:
                self.publisher.publish_alert(alert)  # also turns the rule's sensor ON
            log.info("camera %s: rule %s fired (%s): %s", alert.camera, alert.rule, alert.severity, alert.text)
            alerts.append(alert)
        fired = {a.rule for a in alerts}
        for change in evaluation.changes:
            if self.publisher is not None and not (change.on and change.rule in fired):
                self.publisher.publish_rule_state(change.camera, change.rule, change.on)
        return alerts

    def _with_snapshot(self, alert: Alert, window: Window, previous: Window | None) -> Alert:
        try:
            return replace(alert, snapshot_jpeg=self.snapshot(window, previous))
        except Exception:  # noqa: BLE001 - an alert without a picture beats no alert
            log.exception("camera %s: could not make the snapshot for rule %s; alerting without it",
                          alert.camera, alert.rule)
            return alert
