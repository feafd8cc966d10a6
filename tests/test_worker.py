"""The NPU queue: bounded, latest-wins per camera, asks first, summaries last."""

import threading

import numpy as np

from daemon.service.worker import AskJob, NpuWorker, SummaryWork, WindowJob, WorkQueue
from daemon.types import Frame, Window


def window(camera, start):
    f = Frame(camera, start, int(start), np.zeros((2, 2, 3), np.uint8))
    return WindowJob(Window(camera, start, start + 8, (f,)), "change")


def test_a_newer_window_replaces_the_pending_one_of_its_camera():
    q = WorkQueue()
    assert q.put_window(window("a", 0)) is None
    dropped = q.put_window(window("a", 8))
    assert dropped.window.start == 0
    assert q.depth == 1
    assert q.get(0).window.start == 8


def test_cameras_are_served_in_arrival_order_and_keep_their_place():
    q = WorkQueue()
    q.put_window(window("a", 0))
    q.put_window(window("b", 0))
    q.put_window(window("a", 8))  # replaces a's window, a stays first in line
    assert [q.get(0).window.camera, q.get(0).window.camera] == ["a", "b"]


def test_asks_go_first_and_summaries_last():
    q = WorkQueue()
    q.put_summary(SummaryWork("daily", iter(())))
    q.put_window(window("a", 0))
    q.put_ask(AskJob("a", "what?"))
    kinds = [type(q.get(0)) for _ in range(3)]
    assert kinds == [AskJob, WindowJob, SummaryWork]
    assert q.get(0) is None


def test_ask_and_summary_lists_are_bounded():
    q = WorkQueue(max_asks=2, max_summaries=1)
    assert [q.put_ask(AskJob("a", i)) for i in range(3)] == [True, True, False]
    assert [q.put_summary(SummaryWork(str(i), iter(()))) for i in range(2)] == [True, False]


def test_wait_idle_counts_the_job_in_flight():
    q = WorkQueue()
    release, started = threading.Event(), threading.Event()
    stop = threading.Event()

    def handle(job):
        started.set()
        release.wait(5)

    worker = NpuWorker(q, stop)
    worker.start(handle)
    q.put_window(window("a", 0))
    assert started.wait(5)
    assert q.depth == 0 and not q.wait_idle(0.05)  # queue empty but the job still runs
    release.set()
    assert q.wait_idle(5)
    stop.set()
    worker.join(5)
    assert not worker.alive()


def test_a_failing_handler_stops_the_worker_and_keeps_the_error():
    q, stop = WorkQueue(), threading.Event()

    def handle(job):
        raise RuntimeError("NPU gone")

    worker = NpuWorker(q, stop)
    worker.start(handle)
    q.put_window(window("a", 0))
    assert stop.wait(5)
    worker.join(5)
    assert str(worker.error) == "NPU gone"


def test_wait_slot_blocks_until_the_cameras_window_is_taken():
    q, stop = WorkQueue(), threading.Event()
    q.put_window(window("a", 0))
    q.put_window(window("b", 0))
    released = threading.Event()

    def producer():
        q.wait_slot("a", stop)
        released.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not released.wait(0.3)  # a's window is still pending
    assert q.get(0).window.camera == "a"
    assert released.wait(5)
    t.join(5)


# ---------------------------------------------------------------- several NPUs


def test_a_question_waits_for_the_npu_that_holds_its_prefix():
    q = WorkQueue()
    q.put_ask(AskJob("a", "on npu1?", npu=1))
    q.put_ask(AskJob("b", "anywhere?"))
    assert q.get(0, npu=0).request == "anywhere?"
    assert q.get(0, npu=0) is None  # the other question is npu 1's
    assert q.get(0, npu=1).request == "on npu1?"


def test_a_cameras_windows_are_analysed_one_at_a_time_across_npus():
    q = WorkQueue()
    q.put_window(window("a", 0))
    assert q.get(0, npu=0).window.start == 0  # npu 0 analyses a's first window
    q.put_window(window("a", 8))
    q.put_window(window("b", 8))
    assert q.get(0, npu=1).window.camera == "b"  # a's next window waits for npu 0, b's need not
    q.done(npu=1)
    assert q.get(0, npu=1) is None
    q.done(npu=0)
    assert q.get(0, npu=1).window.start == 8  # now any NPU may take it


def test_two_npus_take_two_cameras_at_once_and_mark_their_own_jobs_done():
    q = WorkQueue()
    q.put_window(window("a", 0))
    q.put_window(window("b", 0))
    first, second = q.get(0, npu=0), q.get(0, npu=1)
    assert {first.window.camera, second.window.camera} == {"a", "b"}
    assert not q.wait_idle(0)
    q.done(npu=0)
    q.done(npu=1)
    assert q.wait_idle(0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_load_is_the_busy_share_of_the_last_span_including_the_running_job():
    clock, q, stop = Clock(), WorkQueue(), threading.Event()
    release, running = threading.Event(), threading.Event()

    def handle(job):  # each window "takes" as many seconds of the fake clock as its start says
        clock.now += job.window.start
        if job.window.camera == "hold":
            running.set()
            release.wait(5)

    worker = NpuWorker(q, stop, clock=clock)
    worker.start(handle)
    q.put_window(window("a", 30))  # busy 1000..1030
    assert q.wait_idle(5)
    clock.now = 1060.0
    assert worker.load(60.0) == 0.5
    q.put_window(window("hold", 30))  # starts at 1060, runs past 1090
    assert running.wait(5)
    assert worker.load(60.0) == 0.5  # 1030..1060 idle, 1060..1090 busy
    assert worker.load(30.0) == 1.0
    assert worker.load(600.0) == 60.0 / 300.0  # at most LOAD_SPAN seconds are kept
    release.set()
    stop.set()
    worker.join(5)
