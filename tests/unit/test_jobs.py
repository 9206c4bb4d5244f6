"""cope_dspy.jobs.run_jobs: the one loop behind recordings, agent episodes and judgments."""

import os
import signal
import threading
import time

import pytest

from cope_dspy.jobs import run_jobs


def test_every_job_is_worked_then_kept_at_most_concurrency_at_once():
    busy, peak, lock, kept = [0], [0], threading.Lock(), {}

    def work(job):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(0.05)
        with lock:
            busy[0] -= 1
        return job * 10

    run_jobs(work, kept.__setitem__, list(range(6)), concurrency=2)
    assert kept == {i: i * 10 for i in range(6)}
    assert peak[0] == 2


def test_a_failing_first_job_starts_no_other_when_it_runs_alone():
    started = []

    def work(job):
        started.append(job)
        raise ValueError("broken metric")

    with pytest.raises(ValueError, match="broken metric"):
        run_jobs(work, lambda job, r: None, [0, 1, 2], concurrency=3, first_alone=True)
    assert started == [0]


def test_first_interrupt_keeps_the_jobs_in_flight_and_starts_no_new_one(ctrl_c, capsys):
    kept = []

    def work(job):
        if job == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Linux hands it to the main thread, waiting on results
            time.sleep(0.3)
        return job

    with pytest.raises(KeyboardInterrupt):
        run_jobs(work, lambda job, r: kept.append(r), list(range(8)), concurrency=2, first_alone=True,
                 unit="widget", resume=lambda: f"{len(kept)} kept so far.")
    assert 1 in kept and len(kept) < 8  # the one in flight was finished and kept; the queued never started
    err = capsys.readouterr().err
    assert "widget(s) in flight" in err and "kept so far." in err


def test_second_interrupt_abandons_the_jobs_in_flight_unkept(ctrl_c):
    kept, returned = [], threading.Event()

    def work(job):
        if job == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            returned.set()
        return job

    with pytest.raises(KeyboardInterrupt):
        run_jobs(work, lambda job, r: kept.append(r), list(range(4)), concurrency=2, first_alone=True)
    assert returned.wait(5)
    time.sleep(0.2)  # time enough for a (wrong) keep after work returned
    assert 0 in kept and 1 not in kept
