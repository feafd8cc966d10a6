"""The NPU queue: bounded, latest-wins per camera, asks first, summaries last."""

import threading

import numpy as np

from daemon.service.workers import NpuWorker
from daemon.service.workqueue import AskJob, SummaryJob, WindowJob, WorkQueue
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
    q.put_summary(SummaryJob("daily", None))
    q.put_window(window("a", 0))
    q.put_ask(AskJob("a", "what?"))
    kinds = [type(q.get(0)) for _ in range(3)]
    assert kinds == [AskJob, WindowJob, SummaryJob]
    assert q.get(0) is None


def test_ask_and_summary_lists_are_bounded():
    q = WorkQueue(max_asks=2, max_summaries=1)
    assert [q.put_ask(AskJob("a", i)) for i in range(3)] == [True, True, False]
    assert [q.put_summary(SummaryJob(str(i), None)) for i in range(2)] == [True, False]


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
        self.now = 0.0

    def __call__(self):
        return self.now


def test_asks_go_first_until_they_exceed_their_share_while_a_window_waits():
    clock = Clock()
    q = WorkQueue(ask_share=0.5, clock=clock)
    for i in range(4):
        q.put_ask(AskJob("a", i))
    q.put_window(window("a", 0))
    served = []
    for _ in range(5):
        job = q.get(0)
        served.append(type(job).__name__)
        clock.now += 1.0
        q.done(job, 1.0)  # every job kept the NPU busy for one second
    # ask (share 1.0 > 0.5) -> the waiting window -> asks again (share 1/2, then 2/3 ...)
    assert served == ["AskJob", "WindowJob", "AskJob", "AskJob", "AskJob"]


def test_asks_over_their_share_still_run_when_no_window_waits():
    clock = Clock()
    q = WorkQueue(ask_share=0.1, clock=clock)
    q.put_ask(AskJob("a", 1))
    q.put_ask(AskJob("a", 2))
    q.done(q.get(0), 5.0)
    assert isinstance(q.get(0), AskJob)


def test_ask_share_is_measured_over_the_recent_past_only():
    from daemon.service.workqueue import NpuShare

    clock = Clock()
    q = WorkQueue(ask_share=0.5, share=NpuShare(horizon=10), clock=clock)
    q.put_ask(AskJob("a", 1))
    q.done(q.get(0), 8.0)  # asks used everything ...
    clock.now = 30.0  # ... long ago
    q.put_ask(AskJob("a", 2))
    q.put_window(window("a", 0))
    assert isinstance(q.get(0), AskJob)


def test_chats_have_their_own_bound_and_can_be_withdrawn():
    from daemon.service.workqueue import ChatJob

    q = WorkQueue(max_asks=1, max_chats=2)
    chats = [ChatJob("http:1", None, None) for _ in range(3)]
    assert [q.put_ask(c) for c in chats] == [True, True, False]
    assert q.put_ask(AskJob("a", 1))  # MQTT asks are counted apart
    assert q.waiting(ChatJob) == 2
    assert q.withdraw(chats[0]) and not q.withdraw(chats[0])
    assert q.put_ask(chats[2])
    assert q.get(0) is chats[1]  # arrival order across both kinds


def test_busy_seconds_count_the_running_job_and_stop_when_idle():
    q, stop = WorkQueue(), threading.Event()
    started, release = threading.Event(), threading.Event()

    def handle(job):
        started.set()
        release.wait(10)

    worker = NpuWorker(q, stop)
    worker.start(handle)
    assert worker.busy_seconds() == 0.0
    q.put_window(window("a", 0))
    assert started.wait(10)
    first = worker.busy_seconds()
    assert 0.0 < first <= worker.busy_seconds()  # the running job counts, and keeps counting
    release.set()
    assert q.wait_idle(10)
    idle = worker.busy_seconds()
    assert idle >= first and worker.busy_seconds() == idle  # nothing runs: the total stands still
    stop.set()
    worker.join(5)


def test_load_is_the_busy_share_of_the_last_span_including_the_running_job():
    clock, q, stop = Clock(), WorkQueue(), threading.Event()
    clock.now = 1000.0
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


def test_the_npu_report_is_the_mean_load_of_every_npus_worker():
    """`<base>/npu` reports one load for several NPUs: busy seconds of all workers over NPUs x wall time."""
    from daemon.service.workers import NpuReport

    clock, q, stop = Clock(), WorkQueue(), threading.Event()

    def handle(job):
        clock.now += 10.0  # each window keeps its NPU busy for ten seconds of the fake clock

    workers = [NpuWorker(q, stop, i, f"npu-worker-{i}", clock=clock) for i in range(2)]
    report = NpuReport(workers)
    assert report.due()  # the first report goes out at once
    for w in workers:
        w.start(handle)
    q.put_window(window("a", 0))
    assert q.wait_idle(5)
    assert sum(w.busy_seconds() for w in workers) == 10.0
    assert report.load() == 0.5  # one NPU busy, one idle, for the ten seconds since the report began
    report.reported(True)
    assert not report.due() and report.load() == 0.0
    stop.set()
    for w in workers:
        w.join(5)
