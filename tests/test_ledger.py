"""daemon.service.ledger: every window outcome through one call, against a real SQLite history."""

import time

import numpy as np
import pytest

from daemon.service.ledger import Outcome, WindowLedger
from daemon.service.metrics import Metrics
from daemon.state.history import History
from daemon.types import Frame, Result, Window
from daemon.video import SourceBase


class Remembering(SourceBase):
    """A source that keeps what the daemon told it was recorded (a file's resume point)."""

    def __init__(self):
        self.resume_after = []

    def windows(self, stop):
        return iter(())

    def recorded(self, window):
        self.resume_after.append(window.start)


def window(start: float) -> Window:
    frame = Frame("porch", start, 0, np.zeros((8, 8, 3), np.uint8))
    return Window("porch", start, start + 8, (frame,))


@pytest.fixture
def ledger(tmp_path):
    with History(tmp_path / "history.sqlite").open() as history:
        source = Remembering()
        yield WindowLedger(history, Metrics(), {"porch": source}, clock=lambda: 1000.0), history, source


@pytest.mark.parametrize("outcome, reason, stored, analysed, resumes", [
    (Outcome.SKIPPED, "static (change 0.001)", "static (change 0.001)", False, True),
    (Outcome.DROPPED, "a newer window replaced it", "dropped: a newer window replaced it", False, True),
    (Outcome.REFUSED, "the prompt is too long", "error: the prompt is too long", False, True),
    (Outcome.CANCELLED, "shutting down", "cancelled: shutting down", False, False),
    (Outcome.ANALYSED, "motion", "motion", True, False),  # resumes once its answers are in (`answered`)
])
def test_one_call_records_history_metrics_and_the_resume_point(ledger, outcome, reason, stored, analysed, resumes):
    ledger, history, source = ledger
    heard = []
    ledger.listen(heard.append)
    window_id = ledger.settle(window(10.0), outcome, reason)
    [row] = history.windows(0, time.time() + 1)
    assert (row.reason, row.analysed, row.recorded) == (stored, analysed, 1000.0)
    assert source.resume_after == ([10.0] if resumes else [])
    [settled] = heard
    assert (settled.outcome, settled.reason, settled.window_id, settled.window.start) == (outcome, reason,
                                                                                          window_id, 10.0)
    counted = {Outcome.ANALYSED: "windows_analysed", Outcome.SKIPPED: "windows_skipped",
               Outcome.DROPPED: "windows_dropped"}.get(outcome)
    metrics = ledger.metrics
    for name in ("windows_analysed", "windows_skipped", "windows_dropped"):
        assert getattr(metrics, name).labels(camera="porch")._value.get() == (1 if name == counted else 0)


def test_an_analysed_window_resumes_and_is_heard_once_its_answers_are_in(ledger):
    ledger, _, source = ledger
    answers = []
    ledger.listen(on_answered=answers.append)
    w = window(20.0)
    window_id = ledger.settle(w, Outcome.ANALYSED, "motion")
    assert source.resume_after == [] and answers == []
    result = Result("porch", "description", "Describe.", 20.0, 28.0, 1000.0, text="A cat.")
    ledger.answered(w, window_id, [result], [])
    assert source.resume_after == [20.0]
    [heard] = answers
    assert heard.window_id == window_id and heard.results == (result,) and heard.alerts == ()


def test_an_analysis_cut_short_by_shutdown_is_recorded_as_cancelled_and_taken_again(ledger):
    ledger, history, source = ledger
    answers = []
    ledger.listen(on_answered=answers.append)
    w = window(30.0)
    window_id = ledger.settle(w, Outcome.ANALYSED, "motion")
    ledger.cut_short(w, window_id)  # the prefix was ready, a shutdown stopped its answers
    [row] = history.windows(0, time.time() + 1)
    assert (row.analysed, row.reason) == (False, "cancelled: shutting down during its answers")
    assert source.resume_after == [] and answers == []  # the next start analyses it again: one analysed row


def test_a_listener_that_fails_is_the_callers_error(ledger):
    ledger, history, _ = ledger

    def broken(_settled):
        raise RuntimeError("listener bug")

    ledger.listen(broken)
    with pytest.raises(RuntimeError, match="listener bug"):
        ledger.settle(window(30.0), Outcome.SKIPPED, "static")
    assert len(history.windows(0, time.time() + 1)) == 1  # recorded before the listeners ran
